"""Re-scoring saved embeddings (``src/eval.py embeddings=...``): every k and δ in seconds, no
model and no media; δ is chosen on validation embeddings only."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from media_retrieval.config.retrieval import resolve_delta
from media_retrieval.reporting.tables import best_delta_table, write_json, write_markdown
from media_retrieval.utils.instantiate import build_loggers

log = logging.getLogger(__name__)


def rescore_run(cfg: DictConfig) -> dict[str, float]:
    """``src/eval.py embeddings=...``: score saved embeddings for every k and δ (seconds, no model,
    no media), logged to the run's loggers (W&B sweeps read the metric from there)."""
    r = cfg.retrieval
    choice = resolve_delta(
        r.par.delta
    )  # saved embeddings carry no model, so no δ chosen on validation
    if choice.how == "default":
        log.warning(
            "retrieval.par.delta=auto without a model: headline δ = %s (every δ of "
            "retrieval.par.deltas "
            "is scored; best_delta.md lists the best)",
            choice.value,
        )
    metrics = rescore_embeddings(
        cfg.embeddings,
        Path(cfg.paths.output_dir) / "retrieval",
        list(r.k),
        choice.value,
        list(r.par.deltas),
        r.table_k,
        bool(r.get("exclude_same_video", False)),
    )
    for lg in build_loggers(cfg):
        lg.log_hyperparams(
            {
                "retrieval": OmegaConf.to_container(r, resolve=True),
                "embeddings": str(cfg.embeddings),
            }
        )
        lg.log_metrics(metrics)
        lg.finalize("success")
    return metrics


def rescore_embeddings(
    path: str | Path,
    out: Path,
    ks: Sequence[int],
    delta: float,
    deltas: Sequence[float],
    table_k: int,
    exclude_same_group: bool = False,
) -> dict[str, float]:
    """Write results.json, results.md and best_delta.md for saved embeddings; return the
    logged metrics (with k-free ``@k`` aliases of the ``table_k`` values, what a sweep over k
    compares)."""
    from media_retrieval.retrieval.embeddings_io import embeddings_role, load_embeddings  # noqa: PLC0415 - retrieval.embeddings_io (and what it loads) stays unloaded until used
    from media_retrieval.retrieval.evaluate import score_rows  # noqa: PLC0415 - retrieval.evaluate (and what it loads) stays unloaded until used
    from media_retrieval.retrieval.results import logged_metrics  # noqa: PLC0415 - retrieval.results (and what it loads) stays unloaded until used

    def scored(p: str | Path) -> list[dict]:
        emb, _, datasets, model = load_embeddings(p)
        return score_rows(
            emb,
            list(ks),
            delta,
            list(deltas),
            model=model,
            datasets=datasets,
            exclude_same_group=exclude_same_group,
        )

    rows = scored(path)
    write_json(rows, out / "results.json")
    write_markdown(rows, out / "results.md", table_k, delta)
    # δ is chosen on validation embeddings only: these, or the val_embeddings.npz saved beside test
    # ones
    if embeddings_role(path) == "val":
        best = best_delta_table(rows)
    else:
        val = Path(path).with_name("val_embeddings.npz")
        best = best_delta_table(scored(val) if val.is_file() else None, rows)
    (out / "best_delta.md").write_text(best)
    print(best)
    metrics = logged_metrics(rows, delta)
    at = f"@{table_k}"
    metrics.update(
        {
            name.replace(at, "@k"): v
            for name, v in list(metrics.items())
            if name.endswith(at) and "_d" not in name
        }
    )
    return metrics
