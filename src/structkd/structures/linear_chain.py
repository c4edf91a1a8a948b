"""Linear-chain conditional random field (Lafferty et al., 2001).

The BiLSTM-CRF tagger's output structure (Lample et al., 2016) and the structured student of the
sequence-labelling experiments in Structural KD (Wang et al., ACL 2021, section 3.2). The score of
a tag sequence ``y`` of a sentence of ``n`` words is

    score(y) = start[y_1] + sum_{i=1}^{n} emissions[i, y_i]
               + sum_{i=2}^{n} transitions[y_{i-1}, y_i] + end[y_n],

so the parts are (position, tag) unaries and (position, tag, next tag) pairs. Inference is the
forward-backward algorithm (Rabiner, 1989): each pass runs as a rescaled recursion (one small
matrix product per word) and falls back to the exact log-space recursion when that would
underflow. The marginals come from the explicit backward pass rather than from autograd, which
keeps them differentiable and cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property

import torch
from torch import Tensor

from structkd.structures.base import Structure, check_finite, lengths_or_full, sequence_mask

# Scaled steps are refused when a sum falls below exp(_SAFE_MARGIN) * (smallest normal float):
# terms lost to underflow then weigh at most L * exp(-_SAFE_MARGIN) relative to the sum.
_SAFE_MARGIN = 20.0


def _dot(marginals: Tensor, potentials: Tensor) -> Tensor:
    """``marginals * potentials`` with ``0 * -inf = 0``.

    A forbidden part (potential -inf, a hard constraint) has marginal 0 and must add nothing to an
    expected score; the product alone would be NaN, and so would its gradient.
    """
    return marginals * potentials.masked_fill(marginals == 0, 0.0)


def _normalized_exp(log_scores: Tensor, real: Tensor, part_dims: int) -> Tensor:
    """``exp(log_scores)`` normalized over the last ``part_dims`` dims where ``real``, else 0.

    At every position the unnormalized log-marginals ``alpha + beta`` (or ``alpha + edge + beta``)
    sum to ``Z`` exactly, so dividing by their own sum instead of by ``exp(log Z)`` gives the same
    marginals and makes each position's sum one by construction. ``exp(alpha + beta - log Z)`` is
    not: in float32 the rounding error of ``alpha``, ``beta`` and ``log Z`` (each of the order of
    the sentence's total score) is exponentiated, giving sums of 1.008 at scores x1e3, 1.3 at x1e5
    and inf at x1e8. Positions beyond a sentence (all ``-inf``) get exactly 0 and no gradient.

    Args:
        log_scores: [B, S, *parts] unnormalized log-marginals.
        real: BoolTensor [B, S], which positions exist.
        part_dims: how many trailing dims form one position's distribution (1 or 2).
    """
    flat = log_scores.flatten(-part_dims)  # [B, S, P]
    if bool(real.all()):  # no padding: skip two passes over the (large) pair tensor
        return flat.softmax(-1).view_as(log_scores)
    pad = ~real[:, :, None]  # [B, S, 1]
    probs = flat.masked_fill(pad, 0.0).softmax(-1)  # padding made finite: no NaN
    return probs.masked_fill(pad, 0.0).view_as(log_scores)  # [B, S, *parts]


def _scaled_pass(
    init: Tensor, trans: Tensor, pre: Tensor | None, post: Tensor | None, real: Tensor
) -> Tensor | None:
    """The recursion of ``chain_pass`` in rescaled probability space, or None if it underflows.

    Each step is ``log(exp(x - max x) @ exp(trans - column max)) + shifts``: a vector-matrix
    product instead of a logsumexp over [B, L, L], about twice as fast on CPU (the scaled forward
    algorithm, Rabiner 1989). Every product term is at most 1, so nothing overflows; a sum below
    ``exp(_SAFE_MARGIN) * tiny`` may have lost terms to underflow and makes the pass refuse.
    """
    shift = trans.amax(-2, keepdim=True).detach()  # [B or 1, 1, L]: column max
    shift = shift.clamp(min=torch.finfo(trans.dtype).min)  # a forbidden column stays finite
    kernel = (trans - shift).exp()  # [B or 1, L, L], entries in [0, 1]
    shared = kernel[0] if kernel.shape[0] == 1 else None  # [L, L]: one matmul for the batch
    steps = real.shape[1]
    pres: Sequence[Tensor | None] = (None,) * steps if pre is None else pre.unbind(1)
    offsets = (shift[:, 0],) * steps if post is None else (post + shift).unbind(1)  # S x [B, L]
    reals = real[:, :, None].unbind(1)  # S x [B, 1]
    all_real = real.all(0).tolist()
    state, states, logs = init, [init], []
    for t, before in enumerate(pres):
        x = state if before is None else state + before  # [B, L]
        top = x.amax(-1, keepdim=True).detach()  # [B, 1]; the result does not depend on it
        scaled = (x - top).exp()  # [B, L], max 1
        total = scaled @ shared if shared is not None else torch.bmm(scaled[:, None], kernel)[:, 0]
        log_sum = total.log()  # [B, L]
        new = log_sum + (top + offsets[t])  # [B, L]
        state = new if all_real[t] else torch.where(reals[t], new, state)
        states.append(state)
        logs.append(log_sum)
    if logs:
        floor = math.log(torch.finfo(init.dtype).tiny) + _SAFE_MARGIN
        fine = torch.stack(logs, 1) >= floor  # [B, S, L]; false for NaN too
        if not bool((fine | ~real[:, :, None]).all()):
            return None
    return torch.stack(states, 1)


def _fused_scaled_passes(
    start: Tensor, end: Tensor, trans: Tensor, emissions: Tensor, real: Tensor
) -> tuple[Tensor, Tensor] | None:
    """The forward and backward recursions of a shared-transition chain run together, or None
    if a step underflows: ``(a [B, N, L], reversed betas [B, N, L])``.

    The forward state is kept without its word's emission (``a_0 = start``, ``a_{t+1}[c] =
    log sum_a exp(a_t[a] + emissions_t[a] + trans[a, c])``, so ``alpha_t = a_t +
    emissions_t``), which makes both directions the same "add, then step" recursion; the two
    states of a sentence sit side by side in one [B, 2L] row and each step is one product with
    the block-diagonal matrix of the two rescaled kernels. One loop over the words instead of
    two: the per-step cost on CPU is mostly the fixed cost of each small operation.

    Args:
        start, end: [L].
        trans: [L, L] transitions.
        emissions: [B, N, L], N >= 2.
        real: BoolTensor [B, N - 1], ``mask[:, 1:]``.
    """
    batch, _, n_tags = emissions.shape
    kernels, shifts = [], []
    for matrix in (trans, trans.t()):
        shift = matrix.amax(0, keepdim=True).detach()  # [1, L]: column max
        shift = shift.clamp(min=torch.finfo(matrix.dtype).min)
        kernels.append((matrix - shift).exp())
        shifts.append(shift)
    kernel = torch.block_diag(*kernels)  # [2L, 2L]
    shift = torch.stack(shifts, 1)  # [1, 2, L]
    pres = torch.stack([emissions[:, :-1], emissions[:, 1:].flip(1)], 2).unbind(1)  # [B, 2, L]
    both_real = torch.stack([real, real.flip(1)], 2)  # [B, S, 2]: each direction's steps
    reals = both_real[..., None].unbind(1)  # S x [B, 2, 1]
    all_real = both_real.all(2).all(0).tolist()
    state = torch.stack([start.expand(batch, n_tags), end.expand(batch, n_tags)], 1)
    states, logs = [state], []
    for t, before in enumerate(pres):
        x = state + before  # [B, 2, L]
        top = x.amax(-1, keepdim=True).detach()  # [B, 2, 1]
        total = ((x - top).exp().view(batch, 2 * n_tags) @ kernel).view(batch, 2, n_tags)
        log_sum = total.log()
        new = log_sum + (top + shift)
        state = new if all_real[t] else torch.where(reals[t], new, state)
        states.append(state)
        logs.append(log_sum)
    floor = math.log(torch.finfo(emissions.dtype).tiny) + _SAFE_MARGIN
    fine = torch.stack(logs, 1) >= floor  # [B, S, 2, L]; false for NaN too
    if not bool((fine | ~torch.stack(reals, 1)).all()):
        return None
    both = torch.stack(states, 1)  # [B, N, 2, L]
    return both[:, :, 0], both[:, :, 1]


def chain_pass(
    init: Tensor, trans: Tensor, pre: Tensor | None, post: Tensor | None, real: Tensor
) -> Tensor:
    """One direction of forward-backward: ``states [B, S+1, L]``, ``states[:, 0] = init`` and

        states[t+1, c] = logsumexp_a(states[t, a] + pre[t, a] + trans[a, c]) + post[t, c]

    where ``real[:, t]`` is true, else ``states[t+1] = states[t]`` (carried through padding).
    Tries the rescaled recursion first and falls back to the log-space one (logsumexp over
    [B, L, L] per step, exact for any potentials) when that underflows, e.g. for scores x1000.

    Args:
        init: [B, L] first state.
        trans: [B or 1, L, L] transition scores, read as ``trans[b, from, to]``.
        pre: [B, S, L] added to the state before the step, or None.
        post: [B, S, L] added after the step, or None.
        real: BoolTensor [B, S], which steps exist.
    """
    scaled = _scaled_pass(init, trans, pre, post, real)
    if scaled is not None:
        return scaled
    all_real = real.all(0).tolist()
    state, states = init, [init]
    for t in range(len(all_real)):
        x = state if pre is None else state + pre[:, t]  # [B, L]
        new = torch.logsumexp(x[:, :, None] + trans, dim=1)  # [B, L]
        new = new if post is None else new + post[:, t]
        state = new if all_real[t] else torch.where(real[:, t, None], new, state)
        states.append(state)
    return torch.stack(states, 1)


class LinearChainCRF(Structure):
    """A first-order linear-chain CRF over tag sequences.

    Every quantity is exact. With B sentences of at most N words and L tags: ``log_partition`` is
    one forward pass, O(B N L^2) time and O(B N L) memory; ``part_marginals`` adds one backward
    pass and O(B N L^2) memory for the pair marginals; ``argmax`` is Viterbi, O(B N L^2);
    ``topk(k)`` is the k-best Viterbi, O(B N L^2 k log k); ``sample(k)`` is forward filtering,
    backward sampling, O(B N L^2 + k B N L). The dynamic programs are sequential over positions
    and vectorized over the batch (and the k samples or k best paths).

    Args:
        emissions: [B, N, L] score of tag ``l`` at word ``i``. Padding may hold any value.
        transitions: [L, L] shared or [B, L, L] per sentence; ``transitions[a, c]`` scores tag
            ``a`` followed by tag ``c``. ``-inf`` forbids a transition.
        lengths: LongTensor [B] of sentence lengths (0 allowed); None = all N.
        start: [L] score of the first tag; None = zeros.
        end: [L] score of the last tag; None = zeros.

    Compact form of a structure: LongTensor [B, N] of tag ids (padding ignored on input, 0 on
    output).

    ``part_marginals`` is the pair ``(unary [B, N, L], pair [B, N-1, L, L])`` with
    ``pair[b, i, a, c] = P(y_i = a, y_{i+1} = c)``; both are 0 beyond a sentence's end.
    ``expected_score`` takes marginals in the same layout (e.g. a teacher's, projected).
    """

    def __init__(
        self,
        emissions: Tensor,
        transitions: Tensor,
        lengths: Tensor | None = None,
        start: Tensor | None = None,
        end: Tensor | None = None,
    ) -> None:
        if emissions.dim() != 3:
            raise ValueError(f"emissions must be [B, N, L], got {list(emissions.shape)}")
        batch, max_len, n_tags = emissions.shape
        if transitions.shape not in ((n_tags, n_tags), (batch, n_tags, n_tags)):
            raise ValueError(
                f"transitions must be [{n_tags}, {n_tags}] or [{batch}, {n_tags}, {n_tags}], "
                f"got {list(transitions.shape)}"
            )
        start = emissions.new_zeros(n_tags) if start is None else start
        end = emissions.new_zeros(n_tags) if end is None else end
        for name, vector in (("start", start), ("end", end)):
            if vector.shape != (n_tags,):
                raise ValueError(f"{name} must be [{n_tags}], got {list(vector.shape)}")
        self.lengths = lengths_or_full(lengths, batch, max_len, emissions.device)
        self.mask = sequence_mask(self.lengths, max_len)  # [B, N]
        check_finite("emissions", emissions, self.mask[:, :, None])
        check_finite("transitions", transitions)
        check_finite("start", start)
        check_finite("end", end)
        # Padding is replaced so that junk (even NaN) never reaches a reduction.
        self.emissions = emissions.masked_fill(~self.mask[:, :, None], 0.0)  # [B, N, L]
        self.transitions = transitions  # [L, L] or [B, L, L]
        self.start = start  # [L]
        self.end = end  # [L]

    # ---- shared pieces ------------------------------------------------------------------------
    @property
    def _batched_transitions(self) -> Tensor:
        """[B or 1, L, L] transitions, broadcastable over the batch."""
        t = self.transitions
        return t if t.dim() == 3 else t[None]

    @cached_property
    def _edges(self) -> Tensor:
        """[B, N-1, L, L]: ``transitions[a, c] + emissions[i+1, c]``, the cost of step i -> i+1."""
        trans = self._batched_transitions[:, None]  # [B or 1, 1, L, L]
        return trans + self.emissions[:, 1:, None, :]  # [B, N-1, L, L]

    @cached_property
    def _forward(self) -> tuple[Tensor, Tensor]:
        """Forward (alpha) pass: ``(alphas [B, N, L], log Z [B])``.

        ``alphas[b, i, c]`` is the log-sum of the scores of all prefixes ``y_1..y_{i+1}`` ending
        in ``c`` (start and emissions included). Past a sentence's end alpha is carried unchanged,
        so the last column holds every sentence's final alpha.
        """
        batch, max_len, _ = self.emissions.shape
        if max_len == 0:
            return self.emissions.new_zeros(batch, 0, self.emissions.shape[-1]), (
                self.emissions.new_zeros(batch)
            )
        alphas = chain_pass(
            self.start + self.emissions[:, 0],
            self._batched_transitions,
            None,
            self.emissions[:, 1:],
            self.mask[:, 1:],
        )  # [B, N, L]
        log_z = torch.logsumexp(alphas[:, -1] + self.end, dim=-1)  # [B]
        log_z = torch.where(self.lengths > 0, log_z, torch.zeros_like(log_z))
        return alphas, log_z

    @cached_property
    def _betas(self) -> Tensor:
        """Backward (beta) pass: betas [B, N, L].

        ``betas[b, i, a]`` is the log-sum of the scores of all suffixes after word i given
        ``y_{i+1} = a`` (end included). Each sentence's pass starts at its own last word with
        ``end``. Past the end betas are -inf, so every marginal read from them is exactly 0 there
        without a mask on the (large) pair tensor, and no gradient flows in from the padding.
        """
        batch, max_len, n_tags = self.emissions.shape
        if max_len == 0:
            return self.emissions  # [B, 0, L]
        # The same recursion run right to left: transposed transitions, the emission of the
        # next word added before the step. Carrying beta through the padding keeps it at ``end``
        # until each sentence's last word.
        reversed_betas = chain_pass(
            self.end.expand(batch, n_tags),
            self._batched_transitions.transpose(1, 2),
            self.emissions[:, 1:].flip(1),
            None,
            self.mask[:, 1:].flip(1),
        )  # [B, N, L], last word first
        stacked = reversed_betas.flip(1)  # [B, N, L]
        return stacked.masked_fill(~self.mask[:, :, None], -torch.inf)

    def fuse_passes(self) -> LinearChainCRF:
        """Runs the forward and backward passes as one recursion (``_fused_scaled_passes``) and
        keeps both, so that ``marginals``, ``pair_marginal_sums`` and ``log_partition`` read
        them: about 1.5x faster than the two passes for a teacher whose marginals are read
        (e.g. a compact cache's teacher, rebuilt per batch). Equal to the separate passes up
        to float rounding. Nothing changes for per-sentence transitions, sentences of fewer
        than two words, a pass already computed, or scores whose rescaled steps underflow
        (the separate passes then run, with their own fallback). Returns ``self``."""
        batch, max_len, _ = self.emissions.shape
        if max_len < 2 or self.transitions.dim() != 2 or "_forward" in self.__dict__:
            return self
        fused = _fused_scaled_passes(
            self.start, self.end, self.transitions, self.emissions, self.mask[:, 1:]
        )
        if fused is None:
            return self
        a, reversed_betas = fused
        last = (self.lengths - 1).clamp(min=0)  # [B]
        positions = torch.arange(max_len, device=a.device)
        carried = torch.minimum(positions[None], last[:, None])  # past the end: the last word
        alphas = (a + self.emissions).gather(1, carried[:, :, None].expand_as(a))
        log_z = torch.logsumexp(alphas[:, -1] + self.end, dim=-1)
        log_z = torch.where(self.lengths > 0, log_z, torch.zeros_like(log_z))
        self.__dict__["_forward"] = (alphas, log_z)
        betas = reversed_betas.flip(1).masked_fill(~self.mask[:, :, None], -torch.inf)
        self.__dict__["_betas"] = betas
        return self

    # ---- Structure API ------------------------------------------------------------------------
    def _log_partition(self) -> Tensor:
        return self._forward[1]

    @cached_property
    def marginals(self) -> Tensor:
        """[B, N, L] ``P(y_i = l)``, 0 beyond each sentence.

        Computed alone (without the O(B N L^2) pair tensor) when only these are needed.
        """
        log_unary = self._forward[0] + self._betas  # [B, N, L]; -inf beyond each sentence
        return _normalized_exp(log_unary, self.mask, 1)  # [B, N, L]

    @cached_property
    def pair_marginals(self) -> Tensor:
        """[B, N-1, L, L] ``P(y_i = a, y_{i+1} = c)``, 0 beyond each sentence."""
        alphas = self._forward[0]  # [B, N, L]
        if alphas.shape[1] == 0:
            return self._edges  # [B, 0, L, L]
        log_pair = alphas[:, :-1, :, None] + self._edges + self._betas[:, 1:, None, :]
        return _normalized_exp(log_pair, self.mask[:, 1:], 2)  # [B, N-1, L, L]

    @cached_property
    def pair_marginal_sums(self) -> Tensor:
        """[B, L, L] ``sum_i P(y_i = a, y_{i+1} = c)``: all ``expected_score`` needs of the pair
        marginals, since the transitions do not depend on the position.

        Computed without the [B, N-1, L, L] pair tensor where that is safe: at step i the pair
        marginal is ``A_i[a] E[a, c] R_i[c] / Z_i`` with ``A_i = exp(alpha_i - max alpha_i)``,
        ``R_i = exp(emissions_{i+1} + beta_{i+1} - max)``, ``E = exp(transitions - max)`` (all
        in [0, 1]) and ``Z_i`` their sum over (a, c), so the sum over steps is
        ``E * (A^T diag(1 / Z) R)``: one batched matrix product, O(B N L^2) time and O(B N L)
        memory. Each step is normalized by its own ``Z_i``, as in ``pair_marginals``. Where some
        ``Z_i`` falls below 1e-30 (a term lost to underflow could then weigh more than 1e-15 of
        its step, e.g. at scores x1000) the sums are taken over ``pair_marginals`` instead.
        """
        batch, max_len, n_tags = self.emissions.shape
        if max_len <= 1:
            return self.emissions.new_zeros(batch, n_tags, n_tags)
        trans = self._batched_transitions  # [B or 1, L, L]
        top = trans.amax((1, 2), keepdim=True)  # [B or 1, 1, 1]
        if not bool(torch.isfinite(top).all()):
            return self.pair_marginals.sum(1)
        real = self.mask[:, 1:]  # [B, N-1]
        left = self._forward[0][:, :-1]  # [B, N-1, L], finite (carried through padding)
        right = (self.emissions[:, 1:] + self._betas[:, 1:]).masked_fill(~real[:, :, None], 0.0)
        a = torch.exp(left - left.amax(-1, keepdim=True))  # [B, N-1, L]
        r = torch.exp(right - right.amax(-1, keepdim=True))  # [B, N-1, L]
        e = torch.exp(trans - top)  # [B or 1, L, L]
        z = (a * torch.matmul(r, e.transpose(1, 2))).sum(-1)  # [B, N-1]
        z = z.masked_fill(~real, 1.0)
        if not bool((z >= 1e-30).all()) or not bool(torch.isfinite(z).all()):
            return self.pair_marginals.sum(1)
        weights = (a / z[:, :, None]).masked_fill(~real[:, :, None], 0.0)  # [B, N-1, L]
        return e * torch.bmm(weights.transpose(1, 2), r)  # [B, L, L]

    def _part_marginals(self) -> tuple[Tensor, Tensor]:
        return self.marginals, self.pair_marginals

    def expected_score(self, part_marginals: tuple[Tensor, Tensor]) -> Tensor:
        """``<mu, theta>`` [B] for marginals ``(unary [B, N, L], pair [B, N-1, L, L])``; ``pair``
        may also be summed over the positions already, [B, L, L] (``pair_marginal_sums``).

        Sums ``<unary, emissions> + sum_i <pair_i, transitions> + <unary_first, start>
        + <unary_last, end>`` over each sentence's own words; anything in the padding of the given
        marginals is ignored. Differentiable in both the marginals and this CRF's potentials.
        """
        unary, pair = part_marginals
        batch, max_len, n_tags = self.emissions.shape
        unary = unary.masked_fill(~self.mask[:, :, None], 0.0)  # [B, N, L]
        if pair.dim() == 4:  # per position: transitions do not depend on it, so sum first
            pair = pair.masked_fill(~self.mask[:, 1:, None, None], 0.0).sum(1)  # [B, L, L]
        total = _dot(unary, self.emissions).sum((1, 2))  # [B]
        total = total + _dot(pair, self._batched_transitions).sum((1, 2))
        if max_len == 0:
            return total
        nonempty = self.lengths > 0  # [B]
        last = (self.lengths - 1).clamp(min=0)  # [B]
        first_unary = unary[:, 0]  # [B, L]
        last_unary = unary[torch.arange(batch, device=unary.device), last]  # [B, L]
        ends = _dot(first_unary, self.start).sum(-1) + _dot(last_unary, self.end).sum(-1)
        return total + torch.where(nonempty, ends, torch.zeros_like(ends))

    def score(self, y: Tensor) -> Tensor:
        """Score [B] of tag sequences y: LongTensor [B, N] (padding ignored)."""
        batch, max_len, n_tags = self.emissions.shape
        if max_len == 0:
            return self.emissions.new_zeros(batch)
        y = y.clamp(0, n_tags - 1)  # padding junk becomes a valid (masked) index
        zero = self.emissions.new_zeros(())
        emitted = self.emissions.gather(-1, y[:, :, None]).squeeze(-1)  # [B, N]
        total = emitted.sum(-1)  # padding emissions are 0
        trans = self._batched_transitions.expand(batch, n_tags, n_tags)  # [B, L, L]
        flat = trans.reshape(batch, n_tags * n_tags)  # [B, L*L]
        moved = flat.gather(1, y[:, :-1] * n_tags + y[:, 1:])  # [B, N-1]
        total = total + torch.where(self.mask[:, 1:], moved, zero).sum(-1)
        last = y.gather(1, (self.lengths - 1).clamp(min=0)[:, None]).squeeze(1)  # [B]
        ends = self.start[y[:, 0]] + self.end[last]  # [B]
        return total + torch.where(self.lengths > 0, ends, zero)

    def _argmax(self) -> Tensor:
        return self._kbest(1)[:, :, 0]

    def topk(self, k: int) -> list[Tensor]:
        """The ``k`` best tag sequences, best first, each LongTensor [B, N].

        k-best Viterbi: every (position, tag) keeps its k best prefixes. A sentence with fewer than
        ``k`` sequences (of finite score) repeats its worst one in the surplus entries.
        """
        tags = self._kbest(k)  # [B, N, k]
        return [tags[:, :, j] for j in range(k)]

    def _kbest(self, k: int) -> Tensor:
        """LongTensor [B, N, k] of the k best tag sequences (see ``topk``)."""
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        batch, max_len, n_tags = self.emissions.shape
        device = self.emissions.device
        if max_len == 0:
            return torch.zeros(batch, 0, k, dtype=torch.long, device=device)
        edges = self._edges.detach()  # [B, N-1, L, L]
        first = (self.start + self.emissions[:, 0]).detach()  # [B, L]
        # delta[b, c, j]: score of the j-th best prefix ending in tag c; slots j > 0 start empty.
        delta = torch.cat(
            [first[:, :, None], first.new_full((batch, n_tags, k - 1), -torch.inf)], -1
        )
        pointers = []  # per step: [B, L, k] flat index (previous tag * k + slot)
        for i in range(1, max_len):
            cand = delta[:, :, None, :] + edges[:, i - 1, :, :, None]  # [B, L_prev, L, k]
            cand = cand.transpose(1, 2).reshape(batch, n_tags, n_tags * k)  # [B, L, L_prev*k]
            best, pointer = cand.topk(k, dim=-1)  # [B, L, k]
            delta = torch.where(self.mask[:, i, None, None], best, delta)
            pointers.append(pointer)
        final = (delta + self.end.detach()[:, None]).reshape(batch, n_tags * k)  # [B, L*k]
        scores, flat = final.topk(k, dim=-1)  # [B, k]
        tag, slot = flat // k, flat % k  # [B, k] each
        path = [tag]
        for i in range(max_len - 1, 0, -1):
            prev = pointers[i - 1].reshape(batch, n_tags * k).gather(1, tag * k + slot)  # [B, k]
            inside = self.mask[:, i, None]  # [B, 1]: step i -> i-1 is real
            tag = torch.where(inside, prev // k, tag)
            slot = torch.where(inside, prev % k, slot)
            path.append(tag)
        tags = torch.stack(path[::-1], dim=1)  # [B, N, k]
        # Paths of score -inf do not exist: repeat the worst real one in their place.
        n_real = (scores > -torch.inf).sum(-1, keepdim=True)  # [B, 1]
        source = torch.minimum(torch.arange(k, device=device)[None], (n_real - 1).clamp(min=0))
        tags = tags.gather(2, source[:, None, :].expand(batch, max_len, k))  # [B, N, k]
        return tags.masked_fill(~self.mask[:, :, None], 0)

    def sample(self, k: int) -> list[Tensor]:
        """``k`` exact samples, each LongTensor [B, N]: forward filtering, backward sampling.

        The last tag is drawn from ``alpha_n + end``, then each earlier tag from
        ``alpha_i[a] + transitions[a, y_{i+1}]`` (Gumbel-max in log space, so large potentials do
        not overflow). Vectorized over the batch and the k samples.
        """
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        batch, max_len, n_tags = self.emissions.shape
        if max_len == 0:
            empty = torch.zeros(batch, 0, dtype=torch.long, device=self.emissions.device)
            return [empty] * k
        alphas = self._forward[0].detach()  # [B, N, L]
        # [B, c, a]: transitions into c, indexed by the next tag c.
        into = self._batched_transitions.detach().transpose(1, 2).expand(batch, n_tags, n_tags)
        rows = torch.arange(batch, device=alphas.device)[None, :]  # [1, B]

        def draw(logits: Tensor) -> Tensor:
            # -log(Exp(1)) is Gumbel(0, 1); the clamp keeps an exact 0 draw from giving +inf.
            exponential = torch.empty_like(logits).exponential_()
            gumbel = -exponential.clamp(min=torch.finfo(logits.dtype).tiny).log()
            return (logits + gumbel).argmax(-1)

        # Carried alphas make the last column every sentence's final alpha.
        tag = draw((alphas[:, -1] + self.end.detach()).expand(k, batch, n_tags))  # [k, B]
        path = [tag]
        for i in range(max_len - 2, -1, -1):
            logits = alphas[None, :, i] + into[rows, tag]  # [k, B, L]
            tag = torch.where(self.mask[None, :, i + 1], draw(logits), tag)
            path.append(tag)
        tags = torch.stack(path[::-1], dim=-1).masked_fill(~self.mask[None], 0)  # [k, B, N]
        return list(tags.unbind(0))

    def tempered(self, temperature: float) -> LinearChainCRF:
        return LinearChainCRF(
            self.emissions / temperature,
            self.transitions / temperature,
            self.lengths,
            self.start / temperature,
            self.end / temperature,
        )
