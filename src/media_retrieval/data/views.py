"""Views of one video for self-supervised training, cut from densely cached frame features.

InfoNCE needs two *different* views of one video as positives. Running the backbone on new
pixels every epoch would cost what the feature cache exists to save, so the cache holds
``data.dense_frames`` frames per clip (e.g. 32) and views are frame subsets of it: each view
covers a random span (half the clip or more) at a random offset, so two views see different
moments and pace. Evaluation uses fixed positions, so validation numbers do not wobble.
"""

from __future__ import annotations

import numpy as np

#: shortest share of the clip a training view covers
MIN_SPAN = 0.5


def _positions(start: float, span: float, n_dense: int, n_view: int) -> np.ndarray:
    """``n_view`` indices into ``n_dense`` frames, evenly spread over [start, start + span]
    (shares of the clip)."""
    pos = np.linspace(start, start + span, n_view) * (n_dense - 1)
    return np.clip(np.rint(pos).astype(int), 0, n_dense - 1)


def random_view(n_dense: int, n_view: int, rng: np.random.Generator) -> np.ndarray:
    """A training view: a random span (at least :data:`MIN_SPAN` of the clip), randomly placed."""
    span = rng.uniform(MIN_SPAN, 1.0)
    return _positions(rng.uniform(0.0, 1.0 - span), span, n_dense, n_view)


def even_view(n_dense: int, n_view: int) -> np.ndarray:
    """The whole clip, evenly: what retrieval embeds (as the clip spec's sampling would)."""
    return _positions(0.0, 1.0, n_dense, n_view)


def eval_view_pair(n_dense: int, n_view: int) -> tuple[np.ndarray, np.ndarray]:
    """Two fixed views for the label-free validation metric: the first and the last two
    thirds of the clip (a third shared), so finding one from the other takes more than
    matching identical frames."""
    return _positions(0.0, 2 / 3, n_dense, n_view), _positions(1 / 3, 2 / 3, n_dense, n_view)
