"""``structkd export``: a trained student as a self-contained directory for serving.

An export directory holds

* ``model.onnx`` (ONNX, opset 17) or ``model.pt`` (TorchScript): the ``ExportGraph`` of the
  model, with dynamic batch, sentence and word sizes;
* ``decoder.safetensors``: what the numpy decoder needs beyond the graph's outputs (a CRF's
  transitions, start and end scores), when it needs anything;
* ``vocab.json``: words, characters and the output names (tags and their schemes, or relations
  and sequence labels);
* ``export.json`` (written last): format and version, task, runtime, decoder, graph inputs and
  outputs, quantization, and the source weights' SHA-256.

Nothing of the training config is needed to run it. ``--quantize int8`` applies dynamic int8
quantization (weights stored as int8, activations quantized per batch at run time): ONNX
Runtime's ``quantize_dynamic`` for ONNX, ``torch.ao.quantization.quantize_dynamic`` of the LSTM
and linear layers for TorchScript.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from structkd.data.errors import DataError
from structkd.export.graph import ExportError, ExportGraph, decoder_of
from structkd.io import atomic_write_json, temporary_directory
from structkd.models.base import Model
from structkd.models.checkpoint import (
    load_model,
    read_model_config,
    tensors_to_bytes,
)
from structkd.models.heads import CRFHead, constraint_scores
from structkd.models.tagger import Tagger

EXPORT_FORMAT = "structkd-export"
EXPORT_VERSION = 1
FORMATS = ("onnx", "torchscript")
GRAPH_FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
OPSET = 17


def is_export_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory written by ``export_model``."""
    return (Path(path) / "export.json").is_file()


def read_export_meta(directory: str | Path) -> dict[str, Any]:
    """The parsed ``export.json`` of an export directory.

    Raises:
        DataError: if it is missing, unreadable, not an export or of another version.
    """
    path = Path(directory) / "export.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(directory, "is not a structkd export directory (no export.json)") from None
    except (OSError, ValueError) as error:
        raise DataError(path, f"unreadable ({error})") from error
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise DataError(path, "is not a structkd export")
    if meta.get("version") != EXPORT_VERSION:
        raise DataError(path, f"format version {meta.get('version')}, expected {EXPORT_VERSION}")
    return meta


def example_inputs(graph: ExportGraph, batch: int = 2, size: int = 3) -> tuple[Tensor, ...]:
    """Dummy inputs of the graph (tracing records the operations, not these values)."""
    tensors = {
        "words": torch.ones(batch, size, dtype=torch.long),
        "vectors": torch.ones(batch, size, 1, dtype=torch.long),
        "casing": torch.ones(batch, size, dtype=torch.long),
        "chars": torch.ones(batch, size, 2, dtype=torch.long),
        "lengths": torch.tensor([size] + [size - 1] * (batch - 1), dtype=torch.long),
    }
    return tuple(tensors[name] for name in graph.inputs)


def _dynamic_axes(graph: ExportGraph) -> dict[str, dict[int, str]]:
    words = {0: "batch", 1: "words"}
    axes = {
        "words": words,
        "casing": words,
        "vectors": {0: "batch", 1: "words", 2: "pieces"},
        "chars": {0: "batch", 1: "words", 2: "chars"},
    }
    axes["lengths"] = {0: "batch"}
    out = {name: axes[name] for name in graph.inputs}
    nodes = {0: "batch", 1: "nodes", 2: "nodes"}
    for name in graph.outputs:
        out[name] = nodes if name in ("arc_scores", "rels") else {0: "batch", 1: "words"}
    if "span_scores" in out:
        out["span_scores"] = {0: "batch", 1: "words", 2: "words"}
    return out


def write_onnx(graph: ExportGraph, path: Path, quantize: str | None) -> None:
    """``graph`` as an ONNX file (the TorchScript-based exporter: an LSTM becomes one ``LSTM``
    node), dynamically quantized to int8 by ONNX Runtime when asked."""
    with warnings.catch_warnings():
        # The tracer warns about shape-dependent Python values and the LSTM's batch size; the
        # export is checked against the model in the tests at other sizes.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            example_inputs(graph),
            str(path),
            dynamo=False,
            input_names=graph.inputs,
            output_names=graph.outputs,
            dynamic_axes=_dynamic_axes(graph),
            opset_version=OPSET,
        )
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        plain = path.with_name(path.stem + ".float.onnx")
        os.replace(path, plain)
        logging.disable(logging.WARNING)  # its advice to pre-process is for static quantization
        try:
            quantize_dynamic(str(plain), str(path), weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        plain.unlink()


def quantized_copy(graph: ExportGraph) -> nn.Module:
    """``graph`` with its LSTM and linear layers dynamically quantized to int8 (a copy)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(graph, {nn.LSTM, nn.Linear}, dtype=torch.qint8)


def write_torchscript(graph: ExportGraph, path: Path, quantize: str | None) -> None:
    """``graph`` traced to TorchScript (int8-quantized first when asked)."""
    module = quantized_copy(graph) if quantize == "int8" else graph
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example_inputs(graph), check_trace=False)
        torch.jit.save(traced, str(path))


def vocab_json(model: Model) -> dict[str, Any]:
    """The vocabularies and output names an export needs."""
    vocab = model.vocab
    data: dict[str, Any] = {"chars": list(vocab.chars)}
    if model.encoder.words is not None:  # a frozen table's words are in vectors.json instead
        data["words"] = list(vocab.words)
    if isinstance(model, Tagger):
        data.update(
            tags=list(vocab.tags),
            tag_scheme=vocab.tag_scheme,
            output_scheme=vocab.output_scheme,
            entity_types=list(vocab.entity_types),
        )
    else:
        data.update(rels=list(vocab.rels), labels=list(vocab.labels))
    return data


def vector_words(model: Model) -> list[str | None] | None:
    """The words of the encoder's frozen word table, row by row (None for rows no word reaches:
    padding and unknown of a table read from a file), or None without one."""
    vectors = model.encoder.vectors
    if vectors is None:
        return None
    words = vectors.source.words
    assert words is not None  # ExportVectors refuses subword tables
    if vectors.saved:  # a file's table is the model's vocabulary: rows 0 and 1 are no words'
        return [None, None, *words[2:]]
    return list(words)


def decoder_tensors(model: Model) -> dict[str, Tensor]:
    """What the numpy decoder reads beside the graph's outputs (empty if nothing)."""
    if isinstance(model, Tagger) and isinstance(model.head, CRFHead):
        head = model.head
        return {"transitions": head.transitions, "start": head.start, "end": head.end}
    if isinstance(model, Tagger) and decoder_of(model) == "viterbi":  # constrained MaxEnt
        like = next(model.parameters()).detach()
        constraints = constraint_scores(model.vocab, like)
        assert constraints is not None
        return dict(zip(("start", "transitions", "end"), constraints))
    return {}


def export_model(
    model_dir: str | Path, out: str | Path, fmt: str = "onnx", quantize: str | None = None
) -> Path:
    """Exports the model of ``model_dir`` into ``out`` (see the module docstring).

    ``out`` is built in a temporary sibling directory and moved into place at the end, so an
    interrupted export leaves nothing half-written; an existing export directory is replaced,
    any other non-empty directory is refused.

    Args:
        model_dir: a model directory (``save_model``).
        out: the export directory.
        fmt: ``onnx`` or ``torchscript``.
        quantize: None or ``int8``.

    Returns:
        The export directory.

    Raises:
        CheckpointError: if ``model_dir`` is not a loadable model.
        ExportError: for models of kinds that cannot be exported, or unknown options.
        FileExistsError: if ``out`` is a non-empty directory that is not an export.
    """
    if fmt not in FORMATS:
        raise ExportError(f"export format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if quantize not in (None, "int8"):
        raise ExportError(f"quantization must be int8, not {quantize!r}")
    out = Path(out)
    if out.exists() and not (out.is_dir() and (is_export_dir(out) or not any(out.iterdir()))):
        raise FileExistsError(f"{out} exists and is not an export directory; choose another --out")
    source = read_model_config(model_dir)
    model = load_model(model_dir)
    graph = ExportGraph(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    # mode 0o777 less the umask (mkdtemp gives 0o700), named like every structkd temporary
    tmp = temporary_directory(out)
    try:
        graph_file = GRAPH_FILES[fmt]
        if fmt == "onnx":
            write_onnx(graph, tmp / graph_file, quantize)
        else:
            write_torchscript(graph, tmp / graph_file, quantize)
        tensors = decoder_tensors(model)
        if tensors:
            (tmp / "decoder.safetensors").write_bytes(tensors_to_bytes(tensors))
        atomic_write_json(tmp / "vocab.json", vocab_json(model))
        table_words = vector_words(model)
        if table_words is not None:
            atomic_write_json(tmp / "vectors.json", {"words": table_words})
        atomic_write_json(
            tmp / "export.json",
            {
                "format": EXPORT_FORMAT,
                "version": EXPORT_VERSION,
                "task": model.task,
                "runtime": fmt,
                "graph": graph_file,
                "decoder": graph.decoder,
                "inputs": graph.inputs,
                "outputs": graph.outputs,
                "quantize": quantize,
                "source_weights_sha256": source.get("weights_sha256"),
            },
        )
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
