"""Shared API of every structured distribution in structkd.

A structure is a Gibbs distribution ``P(y) = exp(score(y)) / Z`` over the outputs of one
sentence (tag sequences, trees, span sets), where ``score(y)`` is a sum of *part* scores read
from potential tensors. Every structure is batched over sentences of different lengths and is pure
tensor math: no vocabularies, files or devices.

Because every score here is linear in the potentials ``theta``, the distribution is an
exponential family with sufficient statistics = part indicators, and the following identities
(used below, so a subclass only provides ``log Z``, the part marginals ``mu`` and a dot product)
hold exactly:

* entropy ``H(p) = log Z_p - <mu_p, theta_p>``
* cross-entropy ``H(p, q) = -sum_y p(y) log q(y) = log Z_q - <mu_p, theta_q>``
* ``KL(p || q) = H(p, q) - H(p)``

The cross-entropy identity is the heart of Structural KD (Wang et al., ACL 2021, eq. 5): it needs
only the teacher's marginals of the *student's* parts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, TypeVar

import torch
from torch import Tensor

S = TypeVar("S", bound="Structure")


def as_list(parts: Any) -> list[Tensor]:
    """Part marginals (a tensor or a tuple of tensors, see ``Structure.part_marginals``) as a
    list."""
    return list(parts) if isinstance(parts, (tuple, list)) else [parts]


def lengths_or_full(
    lengths: Tensor | None, batch: int, max_len: int, device: torch.device
) -> Tensor:
    """Returns ``lengths`` as a LongTensor [B], defaulting to full length.

    Args:
        lengths: LongTensor [B] or None.
        batch: batch size B.
        max_len: padded length N.
        device: device of the potentials.

    Raises:
        ValueError: if a length is negative or larger than ``max_len``.
    """
    if lengths is None:
        return torch.full((batch,), max_len, dtype=torch.long, device=device)
    lengths = torch.as_tensor(lengths, device=device).long()
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape [{batch}], got {list(lengths.shape)}")
    if batch and (int(lengths.min()) < 0 or int(lengths.max()) > max_len):
        raise ValueError(f"lengths must lie in [0, {max_len}], got {lengths.tolist()}")
    return lengths


def check_finite(name: str, tensor: Tensor, mask: Tensor | None = None) -> None:
    """Raises a clear ValueError when ``tensor`` holds NaN where ``mask`` is true.

    Padding (mask false) may hold anything; +-inf is allowed (it encodes hard constraints).

    Args:
        name: the argument's name, for the message.
        tensor: potentials of any shape.
        mask: boolean tensor broadcastable to ``tensor``; None = everywhere.
    """
    nan = torch.isnan(tensor.detach())
    if mask is not None:
        nan = nan & mask
    if bool(nan.any()):
        raise ValueError(f"{name} contains NaN at {int(nan.sum())} unmasked position(s)")


def sequence_mask(lengths: Tensor, max_len: int) -> Tensor:
    """BoolTensor [B, N], true at positions < length."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def autograd_marginals(
    log_partition_fn: Callable[..., Tensor], potentials: Sequence[Tensor]
) -> list[Tensor]:
    """Marginals as the gradient of ``log Z`` with respect to the potentials.

    Works whatever the grad state: under ``torch.no_grad()`` and for frozen potentials it uses
    detached copies (the result is then a constant); when the potentials require grad the
    marginals stay differentiable (``create_graph=True``).

    Args:
        log_partition_fn: maps the potentials to ``log Z`` [B].
        potentials: tensors of any shape.

    Returns:
        One tensor per potential, same shapes.
    """
    differentiable = torch.is_grad_enabled() and any(p.requires_grad for p in potentials)
    with torch.enable_grad():
        if differentiable:
            inputs = [p if p.requires_grad else p.detach().requires_grad_() for p in potentials]
        else:
            inputs = [p.detach().requires_grad_() for p in potentials]
        log_z = log_partition_fn(*inputs)
        if not log_z.requires_grad:  # e.g. a batch of empty sentences: log Z is constant
            return [torch.zeros_like(p) for p in potentials]
        grads = torch.autograd.grad(
            log_z.sum(), inputs, create_graph=differentiable, allow_unused=True
        )
    return [torch.zeros_like(p) if g is None else g for p, g in zip(potentials, grads)]


class Structure(ABC):
    """Base class of batched structured distributions.

    Subclasses implement ``_log_partition``, ``_part_marginals``, ``expected_score``,
    ``_argmax``, ``score`` and ``tempered``; ``sample`` and ``topk`` where tractable. Everything
    else (``log_prob``, ``entropy``, ``cross_entropy``, ``kl``) follows from the exponential-family
    identities in the module docstring. Computed quantities are cached on the instance, so a
    structure should be built once per batch of potentials.

    Attributes:
        lengths: LongTensor [B], the number of tokens (words) of each sentence.
    """

    lengths: Tensor

    # ---- to implement ---------------------------------------------------------------------
    @abstractmethod
    def _log_partition(self) -> Tensor:
        """log Z [B]."""

    @abstractmethod
    def _part_marginals(self) -> Any:
        """Marginals of every potential the score reads, in the layout ``expected_score`` takes."""

    @abstractmethod
    def expected_score(self, part_marginals: Any) -> Tensor:
        """``<mu, theta>`` [B]: the expected score under part marginals ``mu``.

        Args:
            part_marginals: marginals in this structure's part layout (see ``part_marginals``),
                e.g. a teacher's marginals projected onto this structure's parts.
        """

    @abstractmethod
    def _argmax(self) -> Any:
        """The highest-scoring structure in compact form."""

    @abstractmethod
    def score(self, y: Any) -> Tensor:
        """Score [B] of structures ``y`` given in compact form."""

    @abstractmethod
    def tempered(self: S, temperature: float) -> S:
        """The same structure with every potential divided by ``temperature``."""

    # ---- provided --------------------------------------------------------------------------
    @cached_property
    def log_partition(self) -> Tensor:
        """log Z [B] (0 for empty sentences)."""
        return self._log_partition()

    @cached_property
    def part_marginals(self) -> Any:
        """Marginals of all scored parts (for most structures the same as ``marginals``)."""
        return self._part_marginals()

    @property
    def marginals(self) -> Tensor:
        """Marginals of the main parts, same layout as the main potentials."""
        parts = self.part_marginals
        return parts[0] if isinstance(parts, tuple) else parts

    @cached_property
    def argmax(self) -> Any:
        """The best structure in compact form (see the subclass)."""
        return self._argmax()

    def log_prob(self, y: Any) -> Tensor:
        """log P(y) [B] for structures in compact form."""
        return self.score(y) - self.log_partition

    @cached_property
    def entropy(self) -> Tensor:
        """Entropy [B] in nats: ``log Z - <mu, theta>``."""
        return self.log_partition - self.expected_score(self.part_marginals)

    def cross_entropy(self: S, other: S) -> Tensor:
        """``-sum_y p(y) log q(y)`` [B] with p = self, q = other (same type and lengths)."""
        self._check_same_kind(other)
        return other.log_partition - other.expected_score(self.part_marginals)

    def kl(self: S, other: S) -> Tensor:
        """``KL(self || other)`` [B]."""
        return self.cross_entropy(other) - self.entropy

    def sample(self, k: int) -> list[Any]:
        """``k`` independent exact samples, each in compact form.

        Raises:
            NotImplementedError: where exact sampling is not tractable.
        """
        raise NotImplementedError(f"{type(self).__name__} has no exact sampler")

    def topk(self, k: int) -> list[Any]:
        """The ``k`` best structures, best first, each in compact form.

        Raises:
            NotImplementedError: where k-best decoding is not tractable.
        """
        raise NotImplementedError(f"{type(self).__name__} has no k-best decoder")

    def _check_same_kind(self, other: Structure) -> None:
        if type(other) is not type(self):
            raise TypeError(
                f"cross_entropy/kl need two structures of the same type, got "
                f"{type(self).__name__} and {type(other).__name__}"
            )
        if not torch.equal(self.lengths, other.lengths):
            raise ValueError("cross_entropy/kl need the same lengths in both structures")
