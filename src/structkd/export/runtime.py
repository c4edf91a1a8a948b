"""Running an export directory: ids in numpy, the graph in ONNX Runtime or TorchScript, the
numpy decoder (``export.decode``) on its outputs.

Predictions come back in the form the PyTorch model's ``predict`` gives: tags in the training
data's scheme (NER), or n heads (1-based, 0 = ROOT) and n relations or None (parsing).
ONNX Runtime is an optional dependency (``pip install structkd[export]``), imported when an
ONNX export is opened.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file

from structkd.data.batching import bucket_batches
from structkd.data.errors import DataError
from structkd.export.bundle import read_export_meta
from structkd.export.decode import best_spans, eisner_heads, mst_heads, seqlabel_trees, viterbi
from structkd.nn.embeddings import MAX_WORD_CHARS, casing_class
from structkd.structures.tags import from_spans, to_spans

Tree = tuple[list[int], list[str] | None]


def _onnx_session(path: Path, threads: int | None) -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise DataError(path, "needs onnxruntime to run: pip install 'structkd[export]'") from None
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class ExportedModel:
    """An export directory, loaded for prediction.

    Args:
        directory: written by ``structkd export``.
        threads: intra-op threads of the ONNX Runtime session (None = its default; TorchScript
            uses ``torch.set_num_threads``).
        device: where a TorchScript graph runs (ONNX exports run on the CPU).

    Attributes:
        task: ``ner`` or ``dep``.
        runtime: ``onnx`` or ``torchscript``.
        quantize: None or ``int8``.

    Raises:
        DataError: if the directory is not a readable export.
    """

    def __init__(
        self,
        directory: str | Path,
        threads: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.directory = Path(directory)
        meta = read_export_meta(directory)
        try:
            self.task: str = meta["task"]
            self.runtime: str = meta["runtime"]
            self.decoder: str = meta["decoder"]
            self.inputs: list[str] = meta["inputs"]
            self.outputs: list[str] = meta["outputs"]
            self.quantize: str | None = meta.get("quantize")
            graph = self.directory / meta["graph"]
            vocab = json.loads((self.directory / "vocab.json").read_text(encoding="utf-8"))
            self.vocab: dict[str, Any] = vocab
            self.word_index = {w: i for i, w in enumerate(vocab.get("words", []))}
            self.char_index = {c: i for i, c in enumerate(vocab["chars"])}
        except (KeyError, TypeError, OSError, ValueError) as error:
            raise DataError(self.directory, f"incomplete export ({error})") from error
        self.vector_index: dict[str, int] = {}
        self.vector_rows = 0
        if "vectors" in self.inputs:
            try:
                table = json.loads((self.directory / "vectors.json").read_text(encoding="utf-8"))
                words = table["words"]
            except (KeyError, TypeError, OSError, ValueError) as error:
                raise DataError(self.directory, f"incomplete export ({error})") from error
            self.vector_index = {w: i for i, w in enumerate(words) if w is not None}
            self.vector_rows = len(words)
        self.decoder_tensors: dict[str, np.ndarray] = {}
        if (self.directory / "decoder.safetensors").is_file():
            self.decoder_tensors = load_file(str(self.directory / "decoder.safetensors"))
        self.device = torch.device(device)
        if self.runtime == "onnx":
            self._session = _onnx_session(graph, threads)
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # TorchScript announces its deprecation
                    self._module = torch.jit.load(str(graph), map_location=self.device)
            except (RuntimeError, ValueError) as error:
                raise DataError(graph, f"unreadable TorchScript ({error})") from error

    # ---- inputs and graph ---------------------------------------------------------------------
    def word_id(self, word: str) -> int:
        """Id of ``word``, else of its lowercase form, else 1 (unknown), as ``Vocabularies``."""
        index = self.word_index.get(word)
        return index if index is not None else self.word_index.get(word.lower(), 1)

    def vector_row(self, word: str) -> int:
        """Row of ``word`` in the frozen word table, else of its lowercase form, else the
        table's size (the learned unknown vector), as ``nn.vector_sources.word_table``."""
        row = self.vector_index.get(word)
        if row is None:
            row = self.vector_index.get(word.lower(), self.vector_rows)
        return row

    def collate(self, tokens: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """The graph's int64 inputs for B non-empty sentences, padded as ``Encoder.collate``:
        words [B, N], vector rows [B, N, 1], casing [B, N], chars [B, N, C], lengths [B] (those
        the graph reads)."""
        lengths = np.array([len(s) for s in tokens], dtype=np.int64)
        width = int(lengths.max(initial=0)) or 1
        arrays = {"lengths": lengths}
        if "words" in self.inputs:
            words = np.zeros((len(tokens), width), dtype=np.int64)
            for b, sentence in enumerate(tokens):
                words[b, : len(sentence)] = [self.word_id(w) for w in sentence]
            arrays["words"] = words
        if "vectors" in self.inputs:
            rows = np.full((len(tokens), width, 1), -1, dtype=np.int64)
            for b, sentence in enumerate(tokens):
                rows[b, : len(sentence), 0] = [self.vector_row(w) for w in sentence]
            arrays["vectors"] = rows
        if "casing" in self.inputs:
            casing = np.zeros((len(tokens), width), dtype=np.int64)
            for b, sentence in enumerate(tokens):
                casing[b, : len(sentence)] = [casing_class(w) for w in sentence]
            arrays["casing"] = casing
        if "chars" in self.inputs:
            n_chars = max((len(w) for s in tokens for w in s), default=1) or 1
            chars = np.zeros((len(tokens), width, min(n_chars, MAX_WORD_CHARS)), dtype=np.int64)
            for b, sentence in enumerate(tokens):
                for i, word in enumerate(sentence):
                    row = [self.char_index.get(c, 1) for c in word[:MAX_WORD_CHARS]]
                    chars[b, i, : len(row)] = row
            arrays["chars"] = chars
        return arrays

    def run(self, tokens: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """The graph's outputs (see ``ExportGraph.outputs``) for one batch of non-empty
        sentences, as numpy arrays."""
        arrays = self.collate(tokens)
        if self.runtime == "onnx":
            values = self._session.run(self.outputs, {n: arrays[n] for n in self.inputs})
        else:
            with torch.inference_mode():
                args = [torch.from_numpy(arrays[n]).to(self.device) for n in self.inputs]
                values = [v.cpu().numpy() for v in self._module(*args)]
        return dict(zip(self.outputs, values))

    # ---- prediction ---------------------------------------------------------------------------
    def _tags(self, ids: np.ndarray, lengths: np.ndarray) -> list[list[str]]:
        names = self.vocab["tags"]
        tags = [[names[t] for t in row[:n]] for row, n in zip(ids.tolist(), lengths.tolist())]
        return self._in_output_scheme(tags)

    def _span_tags(self, span_scores: np.ndarray, lengths: np.ndarray) -> list[list[str]]:
        types = self.vocab["entity_types"]
        tags = [
            from_spans([(i, j + 1, types[r]) for i, j, r in spans], n, self.vocab["tag_scheme"])
            for spans, n in zip(best_spans(span_scores, lengths), lengths.tolist())
        ]
        return self._in_output_scheme(tags)

    def _in_output_scheme(self, tags: list[list[str]]) -> list[list[str]]:
        """Tags in the model's tag scheme -> in the training data's (as ``Tagger.predict``)."""
        scheme = self.vocab["output_scheme"]
        if scheme == self.vocab["tag_scheme"]:
            return tags
        return [from_spans(to_spans(t), len(t), scheme) for t in tags]

    def _trees(self, outputs: dict[str, np.ndarray], lengths: np.ndarray) -> list[Tree]:
        if self.decoder == "seqlabel":
            return seqlabel_trees(outputs["label_log_probs"], lengths, self.vocab["labels"])
        decode = eisner_heads if self.decoder == "eisner" else mst_heads
        heads = decode(outputs["arc_scores"], lengths)
        if "rels" not in outputs:
            return [(h, None) for h in heads]
        names = self.vocab["rels"]
        rels = outputs["rels"]
        return [
            (h, [names[int(rels[b, d, head])] for d, head in enumerate(h, start=1)])
            for b, h in enumerate(heads)
        ]

    def predict_batch(self, tokens: Sequence[Sequence[str]]) -> list[Any]:
        """Predictions for one batch of non-empty sentences: tags (NER) or trees (parsing)."""
        outputs = self.run(tokens)
        lengths = np.array([len(s) for s in tokens], dtype=np.int64)
        if self.decoder == "argmax":
            return self._tags(outputs["tags"], lengths)
        if self.decoder == "viterbi":
            t = self.decoder_tensors
            ids = viterbi(outputs["emissions"], lengths, t["transitions"], t["start"], t["end"])
            return self._tags(ids, lengths)
        if self.decoder == "spans":
            return self._span_tags(outputs["span_scores"], lengths)
        return self._trees(outputs, lengths)

    def _empty(self) -> Any:
        if self.task == "ner":
            return []
        return ([], [] if self.vocab["rels"] else None)

    def predict(self, tokens: Sequence[Sequence[str]], batch_size: int = 64) -> list[Any]:
        """Predictions for every sentence, in input order, in length-bucketed batches (empty
        sentences get empty outputs without running the graph)."""
        out = [self._empty() for _ in tokens]
        real = [i for i, sentence in enumerate(tokens) if len(sentence)]
        for ids in bucket_batches([len(tokens[i]) for i in real], batch_size):
            chosen = [real[i] for i in ids]
            for i, prediction in zip(chosen, self.predict_batch([tokens[i] for i in chosen])):
                out[i] = prediction
        return out
