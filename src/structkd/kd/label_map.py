"""Per-token tag distributions over a foreign label set, expressed on a student's tag set.

A teacher that structkd did not train (a Hugging Face token classifier, a file of per-token
distributions) labels tokens with its own inventory: ``B-PER``/``I-PER`` (BIO), BIOES, IOB1, in
any order, perhaps with more or fewer entity types. Its tokens are independent (a MaxEnt
teacher), so it defines a distribution over its label sequences; every label sequence decodes to
one set of entity spans (``structkd.structures.tags.to_spans``, conlleval's rules), which the
student's scheme writes as one tag sequence. ``TagMap.apply`` returns the exact per-token
marginals of the student's tags under that distribution. Labels that are the student's own tags in
the student's order are taken as they are, as a structkd teacher's are.

Why it is exact and cheap: whether token ``i`` (label ``b``) starts an entity depends only on the
label of token ``i - 1``, whether it ends one only on the label of token ``i + 1`` (conlleval's
start and end rules), and the student's tag of ``i`` is fixed by ``b``'s type and those two facts
(BIOES: ``S`` = start and end, ``B`` = start only, ``E`` = end only, ``I`` = neither; BIO: ``B``
iff start). The neighbours are independent of each other and of token ``i``, so

    P(tag_i = S-X) = sum_{b of type X} q_i(b) P(start | b) P(end | b),  and so on,

with ``P(start | b) = sum_a q_{i-1}(a) start(a, b)``: O(N L_t^2) per sentence. The sentence
boundaries act as ``O`` tokens, as in the decoder.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from structkd.structures.tags import parse_tag, to_spans


class LabelMapError(ValueError):
    """Teacher labels that cannot be expressed on the student's tags."""


def _starts(prev: str, cur: str) -> bool:
    """Whether ``cur`` starts an entity after ``prev`` (both labels; read off the decoder)."""
    return any(start == 1 for start, _, _ in to_spans([prev, cur]))


def _ends(cur: str, nxt: str) -> bool:
    """Whether the entity at ``cur`` ends before ``nxt``."""
    return any(start <= 0 < end == 1 for start, end, _ in to_spans([cur, nxt]))


def _student_prefix(scheme: str, starts: bool, ends: bool) -> str:
    if scheme == "BIO":
        return "B" if starts else "I"
    return {(True, True): "S", (True, False): "B", (False, True): "E"}.get((starts, ends), "I")


class TagMap:
    """Maps distributions over ``teacher_labels`` to the student's ``student_tags``.

    Args:
        teacher_labels: the teacher's label of each index (``O`` or ``PREFIX-TYPE``).
        student_tags: the student's tag of each index (``Vocabularies.tags``).
        student_scheme: ``BIOES`` or ``BIO``.
        teacher: names the teacher in messages (a directory, a file).

    Raises:
        LabelMapError: for malformed teacher labels or entity types the student lacks (all of
            them named in one line).
    """

    def __init__(
        self,
        teacher_labels: Sequence[str],
        student_tags: Sequence[str],
        student_scheme: str,
        teacher: str = "teacher",
    ) -> None:
        if student_scheme not in ("BIOES", "BIO"):
            raise LabelMapError(f"student tag scheme must be BIOES or BIO, not {student_scheme}")
        self.teacher_labels = list(teacher_labels)
        self.student_tags = list(student_tags)
        # The student's own tags, in its order (a structkd teacher's convention): as they are.
        self.identity = self.teacher_labels == self.student_tags
        index = {t: i for i, t in enumerate(self.student_tags)}
        malformed, unknown = [], []
        types: list[str | None] = []
        for label in self.teacher_labels:
            try:
                prefix, type_ = parse_tag(label)
            except ValueError:
                malformed.append(label)
                continue
            types.append(type_)
            if type_ is not None and f"B-{type_}" not in index:
                unknown.append(label)
        if malformed:
            raise LabelMapError(
                f"{teacher}: labels {', '.join(malformed)} are not O or PREFIX-TYPE (B-PER, "
                "I-PER, E-PER, S-PER); they cannot be mapped onto the student's tags"
            )
        if unknown:
            known = sorted({t.split("-", 1)[1] for t in self.student_tags if t != "O"})
            raise LabelMapError(
                f"{teacher}: labels {', '.join(unknown)} cannot be mapped: their entity types "
                f"are not among the student's ({', '.join(known) or 'none'})"
            )
        missing = sorted(
            {t.split("-", 1)[1] for t in self.student_tags if t != "O"} - set(filter(None, types))
        )
        if missing:
            warnings.warn(
                f"{teacher} has no labels of entity types {', '.join(missing)}: the student "
                "learns them from gold tags only",
                UserWarning,
                2,
            )
        labels = [*self.teacher_labels, "O"]  # the last row/column: a sentence boundary
        n = len(self.teacher_labels)
        self.start = torch.tensor(
            [[float(_starts(a, b)) for b in self.teacher_labels] for a in labels]
        )  # [L_t + 1, L_t]
        self.end = torch.tensor(
            [[float(_ends(b, c)) for c in labels] for b in self.teacher_labels]
        )  # [L_t, L_t + 1]
        # targets[k][b]: the student's tag id for label b with (starts, ends) = case k.
        self.cases = ((True, True), (True, False), (False, True), (False, False))
        self.targets = torch.zeros(len(self.cases), n, len(self.student_tags))
        for k, (starts, ends) in enumerate(self.cases):
            for b, type_ in enumerate(types):
                prefix = _student_prefix(student_scheme, starts, ends)
                tag = "O" if type_ is None else f"{prefix}-{type_}"
                self.targets[k, b, index[tag]] = 1.0

    def apply(self, probs: Tensor, lengths: Tensor) -> Tensor:
        """The student's tag marginals [B, N, L_s] from independent teacher tokens.

        Args:
            probs: [B, N, L_t] per-token distributions over the teacher's labels (rows past a
                sentence's end are ignored).
            lengths: LongTensor [B].

        Returns:
            [B, N, L_s]: rows sum to 1 within each sentence, zero on padding. O(B N L_t^2).
        """
        batch, width, n_labels = probs.shape
        if n_labels != len(self.teacher_labels):
            raise ValueError(
                f"distributions over {n_labels} labels, the teacher has {len(self.teacher_labels)}"
            )
        mask = torch.arange(width, device=probs.device)[None, :] < lengths.to(probs.device)[:, None]
        if self.identity:
            return probs * mask[..., None]
        q = probs * mask[..., None]  # [B, N, L]
        boundary = (~mask).to(probs.dtype)[..., None]  # [B, N, 1]
        ext = torch.cat([q, boundary], -1)  # [B, N, L + 1]: padding acts as an O boundary
        edge = ext.new_zeros(batch, 1, n_labels + 1)
        edge[..., -1] = 1.0
        prev = torch.cat([edge, ext[:, :-1]], 1)  # [B, N, L + 1]
        nxt = torch.cat([ext[:, 1:], edge], 1)  # [B, N, L + 1]
        start, end, targets = (t.to(probs) for t in (self.start, self.end, self.targets))
        p_start = prev @ start  # [B, N, L]
        p_end = nxt @ end.t()  # [B, N, L]
        out = probs.new_zeros(batch, width, len(self.student_tags))
        for k, (starts, ends) in enumerate(self.cases):
            weight = (p_start if starts else 1 - p_start) * (p_end if ends else 1 - p_end)
            out = out + (q * weight) @ targets[k]  # [B, N, L_s]
        return out
