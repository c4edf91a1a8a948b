"""Sequence encoder and scorers: BiLSTM, MLP and the biaffine span/arc scorer."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class BiLSTM(nn.Module):
    """A bidirectional LSTM over padded sentences that never reads padding.

    Sentences are packed, so a sentence's outputs do not depend on how much padding its batch has
    (batched and one-by-one encodings agree). Cost O(N (D + H) H) per sentence and layer.

    Args:
        input_dim: input vector size D.
        hidden: hidden size H of each direction (the output has 2H).
        layers: number of stacked layers.
        dropout: dropout between layers and on the output.
    """

    def __init__(self, input_dim: int, hidden: int, layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            input_dim,
            hidden,
            num_layers=layers,
            bidirectional=True,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.dim = 2 * hidden

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """Encodes inputs [B, N, D] of lengths LongTensor [B] into [B, N, 2H] (0 on padding)."""
        max_len = inputs.shape[1]
        # pack_padded_sequence rejects empty sentences; they get one (masked) step instead.
        packed = pack_padded_sequence(
            inputs, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        outputs, _ = self.lstm(packed)
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=max_len)
        mask = torch.arange(max_len, device=inputs.device)[None, :] < lengths[:, None]  # [B, N]
        return self.dropout(outputs.masked_fill(~mask[:, :, None], 0.0))  # [B, N, 2H]


class MLP(nn.Module):
    """``dropout(activation(W x + b))``: the one-layer projection used before biaffine scorers.

    Args:
        input_dim: input size.
        output_dim: output size.
        dropout: dropout on the output.
        activation: apply LeakyReLU (Dozat & Manning, ICLR 2017) when true.
    """

    def __init__(
        self, input_dim: int, output_dim: int, dropout: float = 0.0, activation: bool = True
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dim, output_dim)
        self.activation: nn.Module = nn.LeakyReLU(0.1) if activation else nn.Identity()
        self.dropout = nn.Dropout(dropout)

    def forward(self, inputs: Tensor) -> Tensor:
        """[..., input_dim] -> [..., output_dim]."""
        return self.dropout(self.activation(self.linear(inputs)))


class Biaffine(nn.Module):
    """Biaffine scorer ``s[b, i, j, r] = [x_i; 1]^T W_r [y_j; 1]`` (Dozat & Manning, ICLR 2017).

    Used for NER as dependency parsing (Yu et al., ACL 2020), where x are span-start and y
    span-end representations. Cost O(B N^2 R D^2).

    Args:
        dim: size D of x and y.
        labels: number of output labels R.
    """

    def __init__(self, dim: int, labels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(labels, dim + 1, dim + 1))
        self.labels = labels

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Scores [B, N, N, R] from x [B, N, D] (rows i) and y [B, N, D] (columns j)."""
        ones = x.new_ones(x.shape[:-1] + (1,))
        x1 = torch.cat([x, ones], -1)  # [B, N, D+1]
        y1 = torch.cat([y, ones], -1)  # [B, N, D+1]
        return torch.einsum("bid,rde,bje->bijr", x1, self.weight, y1)  # [B, N, N, R]


class Triaffine(nn.Module):
    """Triaffine scorer ``s[b, i, j, k] = sum W[p, q, r] x1[b, i, p] y1[b, j, q] z1[b, k, r]``
    with ``x1 = [x; 1]`` (likewise y, z), so every lower-order term has its own weights.

    Scores the sibling parts of a second-order parser (Wang & Tu, AACL 2020; Zhang et al., ACL
    2020): x are heads, y modifiers and z their siblings. Cost O(B N D^2 (D + N) + B N^3 D); the
    weights start at zero, as in SuPar, so training starts from the first-order model.

    Args:
        dim: size D of x, y and z.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim + 1, dim + 1, dim + 1))

    def forward(self, x: Tensor, y: Tensor, z: Tensor) -> Tensor:
        """Scores [B, N, N, N] from x, y, z [B, N, D] (indices i, j, k)."""
        ones = x.new_ones(x.shape[:-1] + (1,))
        x1, y1, z1 = (torch.cat([t, ones], -1) for t in (x, y, z))  # [B, N, D+1]
        xw = torch.einsum("bip,pqr->biqr", x1, self.weight)  # [B, N, D+1, D+1]
        xwy = torch.einsum("biqr,bjq->bijr", xw, y1)  # [B, N, N, D+1]
        return torch.einsum("bijr,bkr->bijk", xwy, z1)  # [B, N, N, N]
