"""Temporal heads: a sequence of frame features (B, T, F) to one clip embedding (B, D)."""

from __future__ import annotations

import torch
from torch import nn

from media_retrieval.config.model import CELLS, READOUTS, TEMPORAL_STATS
from media_retrieval.errors import ConfigError


class TemporalHead(nn.Module):
    """LSTM/GRU over frame features, or no recurrence at all (``cell='none'``: the mean frame).

    Readouts: ``last`` is the final hidden state (the paper's embedding), ``mean`` averages the
    hidden states over time, ``last_hc`` concatenates the final hidden and cell states (LSTM).
    For a bidirectional cell, ``last`` joins the forward direction's last step with the
    backward direction's, which has seen the whole clip too. An optional linear projection
    sets the embedding size; by default the readout *is* the embedding, as in the paper.

    ``center`` subtracts the clip's mean frame feature before the recurrence, so the cell sees
    how the features *change* rather than the static appearance (shape, colour, background).
    Not in the paper; on the built-in corpus it lifts seen P@5 from 0.07 to ~0.4 because a
    classifier on raw ImageNet features memorises the training clips' appearance (README).
    ``center=false`` is the paper-exact input; ``cell='none'`` ignores it (the mean of centred
    frames is 0), so ``model.temporal.cell=none`` alone gives the mean-of-frames baseline.

    ``stats`` fuses training-free statistics of the raw frame features (``mean``, ``std``: how
    much each feature varies over the clip, ``diff``: the mean absolute change between frames)
    with the learned part: the embedding is ``[n(s_1), ..., n(s_m)] / sqrt(m) ⊕ w · n(learned)``
    (``n``: L2 normalisation, ``w``: ``fusion_weight``, a buffer so a weight chosen after
    training travels with the weights). The objective trains the learned part alone
    (:meth:`learned`), so what the backbone knows is kept whatever training does, and ``w = 0``
    is exactly the training-free embedding. With ``cell='none'`` the statistics are the embedding.
    """

    def __init__(
        self,
        in_dim: int,
        cell: str = "lstm",
        hidden: int = 256,
        num_layers: int = 1,
        bidirectional: bool = False,
        readout: str = "last",
        dropout: float = 0.0,
        embed_dim: int | None = None,
        center: bool = False,
        stats: list[str] | tuple[str, ...] | None = None,
        fusion_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.stats = tuple(stats or ())
        bad = [st for st in self.stats if st not in TEMPORAL_STATS]
        if bad or len(set(self.stats)) != len(self.stats):
            raise ConfigError(
                f"model.temporal.stats={list(self.stats)}; valid: distinct of "
                f"{', '.join(TEMPORAL_STATS)}"
            )
        if cell not in CELLS:
            raise ConfigError(f"model.temporal.cell={cell!r}; valid: {', '.join(CELLS)}")
        if readout not in READOUTS:
            raise ConfigError(f"model.temporal.readout={readout!r}; valid: {', '.join(READOUTS)}")
        if readout == "last_hc" and cell != "lstm":
            raise ConfigError(
                "model.temporal.readout=last_hc needs cell=lstm (only an LSTM has a cell state)"
            )
        if not 1 <= num_layers <= 8:
            raise ConfigError(f"model.temporal.num_layers must be in 1..8, got {num_layers}")
        # Centering applies to recurrent cells only: the mean of centred frames is always 0.
        self.cell, self.readout, self.center = cell, readout, center and cell != "none"
        if cell == "none":
            self.rnn = None
            out = in_dim
        else:
            rnn_cls = nn.LSTM if cell == "lstm" else nn.GRU
            self.rnn = rnn_cls(
                in_dim,
                hidden,
                num_layers=num_layers,
                batch_first=True,
                bidirectional=bidirectional,
                dropout=dropout if num_layers > 1 else 0.0,
            )
            out = hidden * (2 if bidirectional else 1) * (2 if readout == "last_hc" else 1)
        self.proj = nn.Linear(out, embed_dim) if embed_dim else None
        self.learned_dim = embed_dim or out
        self.fused = bool(self.stats)
        if self.fused:
            self.register_buffer("fusion_weight", torch.tensor(float(fusion_weight)))
        stat_dim = in_dim * len(self.stats)
        self.has_learned = not (self.fused and self.rnn is None and self.proj is None)
        self.embed_dim = (
            stat_dim + (self.learned_dim if self.has_learned else 0)
            if self.fused
            else self.learned_dim
        )

    def statistics(self, x: torch.Tensor) -> torch.Tensor:
        """(B, m·F): each statistic of the raw frame features L2-normalised, the block of unit
        norm."""
        parts = []
        for name in self.stats:
            if name == "mean":
                v = x.mean(dim=1)
            elif name == "std":
                v = x.std(dim=1, unbiased=False)
            else:  # diff
                v = (
                    (x[:, 1:] - x[:, :-1]).abs().mean(dim=1)
                    if x.shape[1] > 1
                    else torch.zeros_like(x[:, 0])
                )
            parts.append(nn.functional.normalize(v, dim=-1))
        return torch.cat(parts, dim=-1) / len(parts) ** 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parts(x)[0]

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the embedding, its learned part) with the recurrence run once."""
        z = self.learned(x)
        if not self.fused:
            return z, z
        block = self.statistics(x)
        if not self.has_learned:
            return block, z
        return torch.cat(
            [block, self.fusion_weight * nn.functional.normalize(z, dim=-1)], dim=-1
        ), z

    def learned(self, x: torch.Tensor) -> torch.Tensor:
        """(B, learned_dim): the trainable readout (what the objective trains)."""
        if self.center:
            x = x - x.mean(dim=1, keepdim=True)
        if self.rnn is None:
            z = x.mean(dim=1)
        else:
            seq, state = self.rnn(x)
            h = state[0] if isinstance(state, tuple) else state  # (layers*dirs, B, H)
            dirs = 2 if self.rnn.bidirectional else 1
            if self.readout == "mean":
                z = seq.mean(dim=1)
            else:
                z = torch.cat([h[-d] for d in range(dirs, 0, -1)], dim=-1)
                if self.readout == "last_hc":
                    c = state[1]
                    z = torch.cat([z, *[c[-d] for d in range(dirs, 0, -1)]], dim=-1)
        return self.proj(z) if self.proj is not None else z
