"""Euclidean ranking of a gallery for a batch of queries, in chunks of queries.

Chunking bounds memory to ``chunk x gallery`` distances whatever the number of queries.
Ties are broken by gallery order (a stable sort), so rankings are reproducible.
"""

from __future__ import annotations

import torch


def squared_euclidean(
    q: torch.Tensor, g: torch.Tensor, g_sq: torch.Tensor | None = None
) -> torch.Tensor:
    """(Q, G) squared distances via ||q||^2 + ||g||^2 - 2 q.g (one matrix multiply)."""
    if g_sq is None:
        g_sq = (g * g).sum(-1)
    d = (q * q).sum(-1, keepdim=True) + g_sq.unsqueeze(0) - 2.0 * (q @ g.T)
    return d.clamp_min_(0.0)


def cosine(q: torch.Tensor, g: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarity of each query row with the matching gallery rows: q (Q, D), g (Q, k, D)."""
    qn = q / q.norm(dim=-1, keepdim=True).clamp_min(eps)
    gn = g / g.norm(dim=-1, keepdim=True).clamp_min(eps)
    return torch.einsum("qd,qkd->qk", qn, gn)


def topk_euclidean(
    q: torch.Tensor,
    g: torch.Tensor,
    k: int,
    max_chunk_bytes: int = 256 << 20,
    g_sq: torch.Tensor | None = None,
    gallery_block: int = 8192,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean top-k of ``g`` for every row of ``q``: (distances, indices), nearest first.

    Queries go in chunks sized so one chunk's distance matrix stays under ``max_chunk_bytes``
    (default 256 MiB), so memory does not grow with the number of queries, and the work is one
    matrix multiply plus ``torch.topk`` per chunk (no full sort). Exact ties may come in any
    order; evaluation uses :func:`media_retrieval.retrieval.evaluate.rank`, which sorts stably.
    ``g_sq``: the gallery's squared norms, when a caller searching the same gallery many times
    keeps them (computing them reads the whole gallery, as much memory traffic as the search).
    Galleries so large that a chunk would hold under 256 queries (over ~260 000 rows at 256-d)
    are searched block by block instead (:func:`_topk_blocked`).
    """
    k = min(k, g.shape[0])
    g_sq = (g * g).sum(-1) if g_sq is None else g_sq
    rows = max(1, max_chunk_bytes // (g.shape[0] * g.element_size()))
    if rows < 256 and q.shape[0] > rows and g.shape[0] > 4 * gallery_block:
        # so large a gallery that a whole-gallery chunk holds few queries: slow thin multiplies
        return _topk_blocked(q, g, g_sq, k, gallery_block)
    g_sq = g_sq.unsqueeze(0)
    dists, idxs = [], []
    for start in range(0, q.shape[0], rows):
        qc = q[start : start + rows]
        # ||q||^2 is the same for a whole row, so it cannot change the order: rank on
        # ||g||^2 - 2 q.g (one fused addmm, one chunk-sized buffer) and add it to the k winners.
        partial = torch.addmm(g_sq, qc, g.T, beta=1.0, alpha=-2.0)
        top = torch.topk(partial, k, dim=1, largest=False, sorted=True)
        d = (top.values + (qc * qc).sum(-1, keepdim=True)).clamp_min_(0.0).sqrt_()
        dists.append(d)
        idxs.append(top.indices)
    return torch.cat(dists), torch.cat(idxs)


def _topk_blocked(
    q: torch.Tensor,
    g: torch.Tensor,
    g_sq: torch.Tensor,
    k: int,
    block: int,
    query_block: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Large galleries: up to ``query_block`` queries against ``block`` gallery rows at a time
    (a cache-friendly matrix multiply; a whole-gallery chunk forces few queries per multiply,
    which runs at half speed), keeping each block's top-k and merging them at the end."""
    dists, idxs = [], []
    for start in range(0, q.shape[0], query_block):
        qc = q[start : start + query_block]
        vals, cand = [], []
        for gs in range(0, g.shape[0], block):
            partial = torch.addmm(
                g_sq[gs : gs + block].unsqueeze(0), qc, g[gs : gs + block].T, beta=1.0, alpha=-2.0
            )
            top = torch.topk(partial, min(k, partial.shape[1]), dim=1, largest=False, sorted=False)
            vals.append(top.values)
            cand.append(top.indices + gs)
        v, c = torch.cat(vals, 1), torch.cat(cand, 1)
        top = torch.topk(v, k, dim=1, largest=False, sorted=True)
        dists.append((top.values + (qc * qc).sum(-1, keepdim=True)).clamp_min_(0.0).sqrt_())
        idxs.append(torch.gather(c, 1, top.indices))
    return torch.cat(dists), torch.cat(idxs)
