"""Retrieval evaluation at the end of validation and test, identical on 1 or N processes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch

from media_retrieval.config.retrieval import DeltaChoice, resolve_delta
from media_retrieval.reporting.run_outputs import write_embeddings, write_test_outputs
from media_retrieval.retrieval.evaluate import EmbeddingSet, rank, score_rows
from media_retrieval.retrieval.par import select_delta
from media_retrieval.retrieval.results import logged_metrics
from media_retrieval.utils.distributed import EmbeddingCollector, gather_by_id

log = logging.getLogger(__name__)


class RetrievalCallback(L.Callback):
    """Collects ``embed`` outputs with their sample ids, gathers them across ranks, scores and
    logs retrieval. Validation: leave-one-out over the validation clips (logged under ``val/``,
    no grid). Test: the split's queries against its gallery, every k and delta logged. What is
    written to ``output_dir`` (rank 0) is :mod:`media_retrieval.reporting.run_outputs`' job."""

    def __init__(
        self,
        k: Sequence[int] = (1, 5, 10),
        delta: float | str = "auto",
        deltas: Sequence[float] = (),
        output_dir: str | None = None,
        model_name: str | None = None,
        table_k: int = 5,
        save_embeddings: bool = False,
        pictures: bool = True,
        gallery_queries: int = 6,
        exclude_same_video: bool = False,
    ) -> None:
        self.exclude_same_video = exclude_same_video
        self.save_embeddings = save_embeddings
        self.pictures, self.gallery_queries = pictures, gallery_queries
        # "auto": δ is chosen at each validation (select_delta over ``deltas``) and kept on the
        # model, so the checkpoint of the best epoch carries the δ chosen with it.
        self.requested = delta
        self.choice = resolve_delta(delta)  # the δ in use and where it came from
        self.auto = self.choice.how != "given"
        self.k, self.deltas = list(k), list(deltas)
        self.output_dir = Path(output_dir) if output_dir else None
        self.model_name = model_name
        self.table_k = table_k
        self.collector = EmbeddingCollector()
        self.rows: list[dict] = []

    @property
    def delta(self) -> float:
        return self.choice.value

    # ---------------------------------------------------------------- collection
    def _reset(self) -> None:
        self.collector.reset()

    def _collect(self, outputs) -> None:
        if isinstance(outputs, dict) and "embedding" in outputs:
            self.collector.to(outputs["embedding"].device)
            self.collector.update(outputs["sample_id"].detach(), outputs["embedding"].detach())

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._collect(outputs)

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._collect(outputs)

    def _gathered(self, pl_module) -> tuple[np.ndarray, torch.Tensor]:
        self.collector.to(pl_module.device)
        world = pl_module.trainer.world_size if pl_module._trainer is not None else 1
        ids, emb = gather_by_id(self.collector, world, pl_module.all_gather)
        return ids.numpy(), emb

    def _embedding_set(
        self, trainer, ids: np.ndarray, emb: torch.Tensor, leave_one_out: bool
    ) -> EmbeddingSet:
        split = trainer.datamodule.split
        items = [split.items[i] for i in ids]
        labels = np.array([split.class_index[it.label] for it in items])
        seen = np.array([it.seen for it in items], dtype=bool)
        if leave_one_out:
            q = g = np.ones(len(items), dtype=bool)
        else:
            q = np.array([it.role in ("query", "both") for it in items])
            g = np.array([it.role in ("gallery", "both") for it in items])
        groups = np.array([it.video_id for it in items])
        held_out = np.array([it.held_out for it in items], dtype=bool)
        kinetics = np.array([it.kinetics for it in items], dtype=bool)
        # rows split by Kinetics class only where the class map says which those are
        kinetics_known = any(it.kinetics for it in split.items)
        return EmbeddingSet(
            ids, emb, labels, seen, q, g, groups, held_out, kinetics if kinetics_known else None
        )

    def _name(self, pl_module) -> str:
        return self.model_name or getattr(pl_module.hparams, "name", type(pl_module).__name__)

    # ---------------------------------------------------------------- scoring
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            self._reset()
            return
        ids, emb = self._gathered(pl_module)
        if len(ids) < 2:
            return
        if len(trainer.datamodule.split.classes) < 2:  # data.labels=none: nothing to score against
            if not getattr(self, "_told_unlabelled", False):
                log.info(
                    "validation retrieval skipped: the data has fewer than 2 classes "
                    "(data.labels=none?); "
                    "choose checkpoints by val/view_acc"
                )
                self._told_unlabelled = True
            self._reset()
            return
        emb_set = self._embedding_set(trainer, ids, emb, leave_one_out=True)
        rows = score_rows(
            emb_set,
            self.k,
            self.delta,
            self.deltas if self.auto else (),
            model=self._name(pl_module),
            exclude_same_group=self.exclude_same_video,
        )
        if self.auto:
            chosen = select_delta(rows, self.table_k)
            if (
                chosen is None and self.deltas
            ):  # no δ met the rule: the most permissive one of the grid
                chosen = min(self.deltas)
            pl_module.par_delta = chosen
            self.choice = resolve_delta(self.requested, chosen)
            pl_module.log("val/par_delta", self.delta, batch_size=len(ids), sync_dist=True)
        if (
            self.save_embeddings
            and trainer.state.fn == "validate"
            and trainer.is_global_zero
            and self.output_dir
        ):
            write_embeddings(
                self.output_dir,
                emb_set,
                trainer.datamodule.split,
                self._name(pl_module),
                role="val",
            )
        for name, value in logged_metrics(rows, self.delta, grid=False).items():
            pl_module.log("val/" + name, value, batch_size=len(ids), sync_dist=True)
        self._reset()

    def on_test_start(self, trainer, pl_module) -> None:
        if self.auto:  # the tested checkpoint's δ (chosen at its validation)
            self.choice = resolve_delta(self.requested, getattr(pl_module, "par_delta", None))
            log.info(
                "PAR δ = %.2f (%s)",
                self.delta,
                "chosen on validation clips"
                if self.choice.how == "validation"
                else "no δ chosen on validation: the default",
            )

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        ids, emb = self._gathered(pl_module)
        emb_set = self._embedding_set(trainer, ids, emb, leave_one_out=False)
        split = trainer.datamodule.split
        datasets = [split.items[i].dataset for i in ids]
        rankings = rank(emb_set, max(self.k), exclude_same_group=self.exclude_same_video)
        self.rows = score_rows(
            emb_set,
            self.k,
            self.delta,
            self.deltas,
            model=self._name(pl_module),
            rankings=rankings,
            datasets=datasets,
        )
        for name, value in logged_metrics(self.rows, self.delta).items():
            pl_module.log(name, value, batch_size=len(ids), sync_dist=True)
        if trainer.is_global_zero and self.output_dir is not None:
            if self.save_embeddings:
                write_embeddings(
                    self.output_dir, emb_set, split, self._name(pl_module), role="test"
                )
            write_test_outputs(
                self.output_dir,
                self.rows,
                emb_set,
                rankings,
                split,
                table_k=self.table_k,
                delta=self.choice,
                pictures=self.pictures,
                gallery_queries=self.gallery_queries,
                loggers=trainer.loggers,
            )
        self._reset()


def tested_delta(trainer: L.Trainer, setting: object) -> DeltaChoice:
    """The δ a run's test used and where it came from: its retrieval callback's choice, else
    what ``retrieval.par.delta`` (``setting``) resolves to."""
    cb = next((c for c in trainer.callbacks if isinstance(c, RetrievalCallback)), None)
    return cb.choice if cb is not None else resolve_delta(setting)
