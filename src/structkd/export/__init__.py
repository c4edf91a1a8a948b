"""Shipping a student: export to ONNX or TorchScript, and the runtime of export directories."""

from structkd.export.bundle import export_model, is_export_dir
from structkd.export.graph import ExportError, ExportGraph
from structkd.export.runtime import ExportedModel

__all__ = ["ExportError", "ExportGraph", "ExportedModel", "export_model", "is_export_dir"]
