"""What every clip embedder shares: one ``embed(batch) -> (B, D)``, a classifier head that
provides the training signal, and the steps that hand embeddings with their sample ids to
the retrieval callback."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.core.mixins import HyperparametersMixin
from lightning.pytorch.utilities.parsing import collect_init_args
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn import functional as F

from media_retrieval.data.clips import ClipSpec
from media_retrieval.errors import ConfigError
from media_retrieval.models.losses import ViewContrastiveLoss, build_metric_loss, infonce_weight
from media_retrieval.models.record import read_record, record_of
from media_retrieval.models.whitening import Whitening


def plain_dict(cfg: Any) -> dict:
    """Plain containers only in hparams: checkpoints must load with ``weights_only=True``."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


class ClipEmbedder(L.LightningModule):
    """The one LightningModule every model shares: the objective (classifier or metric loss),
    the optimizer and scheduler (Hydra partials) and the train/eval/predict steps live here, and
    so do the arguments they take, declared once. A model subclass adds only its encoder: its
    own arguments, ``**common`` passed on here, then ``self._init_objective()`` once the encoder
    (and so :attr:`encode_dim`) exists, plus :meth:`encode`."""

    uses_frame_features = False
    has_trainable_embedding = True
    #: a frozen clip-level encoder whose rows the feature cache keeps (``clip_features`` in the
    #: batch, :meth:`...DataModule.attach_clip_encoder`); None: the model reads pixels or frames
    cached_clip_encoder: torch.nn.Module | None = None
    #: how files become this model's input; set from the training data, saved in checkpoints
    clip_spec: ClipSpec | None = None
    #: PAR's δ chosen on validation clips (``retrieval.par.delta=auto``); saved in checkpoints
    par_delta: float | None = None
    #: the pixel normalisation the encoder was trained with (``ClipSpec.normalize``): a property
    #: of the model, so data, index and search use it whatever their config says
    input_normalize = "imagenet"

    def __init__(
        self,
        *,
        num_classes: int = 0,
        train_classes: list[str] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        dropout: float = 0.25,
        input_size: int = 224,
        loss: dict | None = None,
        name: str = "clip_embedder",
        whiten: int | None = None,
        compile: bool = False,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__()

        # The subclass's own arguments (its frame) plus these, normalised: plain containers only,
        # so checkpoints load with ``weights_only=True``; code (the partials) stays out of them.
        hparams: dict[str, Any] = {}
        for frame_args in collect_init_args(
            inspect.currentframe(), [], classes=(HyperparametersMixin,)
        ):
            hparams.update(frame_args)
        hparams.update(
            num_classes=num_classes,
            lr=lr,
            weight_decay=weight_decay,
            dropout=dropout,
            input_size=input_size,
            name=name,
            loss=plain_dict(loss or {"name": "ce"}),
            whiten=whiten,
            compile=compile,
            train_classes=list(train_classes) if train_classes is not None else None,
        )
        for key in ("optimizer", "scheduler"):
            hparams.pop(key, None)
        self.save_hyperparameters(hparams)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        # PCA whitening of the encoder's output (``whiten``), fitted on training embeddings
        self.whitening: Whitening | None = None
        if compile:  # the inference path (index, search, serve, predict) compiled on first call
            self.embed = torch.compile(self.embed)

    @property
    def input_spec(self) -> ClipSpec:
        """How files become this model's input: the spec it was trained with, else its defaults
        (its input size and channels)."""
        if self.clip_spec is not None:
            return self.clip_spec
        backbone = self.hparams.get("backbone") or {}
        in_chans = self.hparams.get("in_chans") or backbone.get("in_chans") or 3
        return ClipSpec(
            image_size=int(self.hparams.get("input_size", 224)),
            in_chans=int(in_chans),
            normalize=self.input_normalize,
        )

    @property
    def embeds_stills(self) -> bool:
        """Whether a still image gets a meaningful embedding (False for models that keep only
        what changes over a clip)."""
        return True

    #: the fix :attr:`media_gap` names: the training-free embedding that keeps images and videos
    #: of the same content together (benchmarks/README.md "Images and videos in one library")
    MIXED_MEDIA_FIX = (
        "for a library that mixes images and videos, index without a checkpoint with "
        "model.temporal.cell=none model.temporal.stats=[mean] (the mean of ImageNet frame features)"
    )

    @property
    def media_gap(self) -> str | None:
        """Why an image and a video of the same content embed apart with this model, or None.
        Index and search warn with it when images and videos meet (a measured effect:
        ``benchmarks/cross_media.py``)."""
        return None

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The model record travels with the weights (:mod:`media_retrieval.models.record`): a
        checkpoint alone is enough to rebuild the model (:func:`media_retrieval.load_model`),
        and to index and search as it was trained."""
        checkpoint["media_retrieval"] = record_of(self).to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        record = read_record(
            checkpoint.get("media_retrieval") or {}, checkpoint.get("hyper_parameters")
        )
        if record.clip_spec is not None:
            self.clip_spec = record.clip_spec
        self.par_delta = record.delta

    def pretrained_encoders(self) -> dict[str, nn.Module]:
        """The parts whose weights come from elsewhere (ImageNet, Kinetics), by role: their
        hashes go into the model record. None for a model trained from scratch."""
        return {}

    def embed_file(self, path: str, spec: ClipSpec | None = None) -> torch.Tensor:
        """(D,) embedding of one video or image, made into a clip by ``spec`` (default: the
        model's own); see :func:`media_retrieval.models.inference.embed_file` for stills."""
        from media_retrieval.models.inference import embed_file  # noqa: PLC0415 - models.inference (and what it loads) stays unloaded until used

        return embed_file(self, path, spec=spec)

    @property
    def encode_dim(self) -> int:
        """Size of :meth:`encode`'s output (each model says)."""
        raise NotImplementedError

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, encode_dim): the model's own clip embedding (each model implements it)."""
        raise NotImplementedError

    @property
    def embed_dim(self) -> int:
        return self.whitening.out_dim if self.whitening is not None else self.encode_dim

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, D) clip embeddings: the one method every retrieval path calls (the encoding,
        whitened when ``whiten`` is set)."""
        return self._whitened(self.encode(batch))

    def _whitened(self, z: torch.Tensor) -> torch.Tensor:
        return self.whitening(z) if self.whitening is not None else z

    @property
    def objective_dim(self) -> int:
        """Size of what the objective trains (the second part of :meth:`encode_parts`)."""
        return self.encode_dim

    def encode_parts(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(the encoding, what the classifier or metric loss trains) from one forward pass: the
        same tensor, unless a model keeps a training-free part out of the objective's reach
        (fused statistics)."""
        z = self.encode(batch)
        return z, z

    @property
    def loss_name(self) -> str:
        return (self.hparams.get("loss") or {}).get("name", "ce")

    def make_classifier(self, num_classes: int) -> nn.Module | None:
        """Dropout (the paper's 25 %) + linear layer on the embedding; None without classes
        or when a metric-learning loss trains the embedding directly."""
        if num_classes <= 0 or self.loss_name != "ce":
            return None
        return nn.Sequential(
            nn.Dropout(self.hparams.dropout), nn.Linear(self.objective_dim, num_classes)
        )

    def set_classes(self, train_classes: list[str]) -> None:
        """Size the classifier for the training classes (known only once the split exists);
        recorded in hparams so a checkpoint knows what was *seen*."""
        self.hparams["train_classes"] = list(train_classes)
        self.hparams["num_classes"] = len(train_classes)
        if self.loss_name != "ce":
            self.metric_loss = build_metric_loss(
                self.hparams.get("loss") or {}, len(train_classes), self.objective_dim
            )
        elif self.classifier is None or self.classifier[-1].out_features != len(train_classes):
            self.classifier = self.make_classifier(len(train_classes))

    def _init_objective(self) -> None:
        """Call at the end of ``__init__``: the classifier (ce) or the metric loss, and the
        whitening (``whiten``: its dimension)."""
        if self.hparams.get("whiten"):
            self.whitening = Whitening(self.encode_dim, int(self.hparams.whiten))
            self._white_buffer: list[torch.Tensor] = []
        num_classes = self.hparams.num_classes
        self.classifier = self.make_classifier(num_classes)
        self.metric_loss = (
            build_metric_loss(self.hparams.get("loss") or {}, num_classes, self.objective_dim)
            if self.loss_name != "ce" and num_classes > 0
            else None
        )
        loss_cfg = self.hparams.get("loss") or {}
        self.ssl_weight = infonce_weight(loss_cfg)
        self.view_loss = (
            ViewContrastiveLoss(float(loss_cfg.get("temperature", 0.1)))
            if self.ssl_weight
            else None
        )
        self._view_pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def supervised(self) -> bool:
        """Whether labels train the model (not for ``infonce`` alone)."""
        return self.loss_name != "infonce"

    def _classify(
        self, batch: dict[str, torch.Tensor], z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.classifier is not None, "num_classes=0: this model has no classifier to train"
        logits = self.classifier(z)
        return F.cross_entropy(logits, batch["target"]), (
            logits.argmax(-1) == batch["target"]
        ).float().mean()

    def training_step(
        self, batch: dict[str, torch.Tensor] | None, batch_idx: int
    ) -> torch.Tensor | None:
        if batch is None:  # every clip of the batch failed to load (logged): skip the step
            return None
        bs = batch["target"].shape[0]
        if self.view_loss is not None:  # two views per clip, one pass; view 0 is the batch's clip
            if "views" not in batch:
                raise ConfigError(
                    "model.loss uses InfoNCE, which needs two views of each clip: set "
                    "data.dense_frames (e.g. 32) with a frozen backbone (cached frame features)"
                )
            enc, zs = self.encode_parts({"features": batch["views"].flatten(0, 1)})
            encoding, zs = enc.view(bs, 2, -1)[:, 0], zs.view(bs, 2, -1)
            z, ssl = zs[:, 0], self.view_loss(zs[:, 0], zs[:, 1])
            self.log("train/infonce", ssl, batch_size=bs)
        else:
            encoding, z = self.encode_parts(batch)
        if self.whitening is not None:  # this epoch's training embeddings: the whitening's data
            self._white_buffer.append(encoding.detach().float().cpu())
        if not self.supervised:
            loss = ssl
        elif self.loss_name != "ce":
            loss = self.metric_loss(z, batch["target"])
        else:
            loss, acc = self._classify(batch, z)
            self.log("train/acc", acc, batch_size=bs)
        if self.view_loss is not None and self.supervised:
            loss = loss + self.ssl_weight * ssl
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step}: "
                "lower model.lr or check the data"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        return loss

    def _eval_step(
        self, batch: dict[str, torch.Tensor] | None, stage: str
    ) -> dict[str, Any] | None:
        if batch is None:
            return None
        encoding, objective = self.encode_parts(batch)
        z = self._whitened(encoding)
        if stage == "val" and self.view_loss is not None and "views" in batch:
            views = batch["views"]
            enc = self._whitened(self.encode_parts({"features": views.flatten(0, 1)})[0])
            self._view_pairs.append(
                (batch["sample_id"].cpu(), enc.view(views.shape[0], 2, -1).detach().float().cpu())
            )
        known = batch["target"] >= 0
        if self.classifier is not None and bool(known.all()):
            loss, acc = self._classify(batch, objective)
            bs = batch["target"].shape[0]
            self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=bs)
            self.log(f"{stage}/acc", acc, sync_dist=True, batch_size=bs)
        return {"embedding": z.detach(), "sample_id": batch["sample_id"]}

    def on_validation_epoch_start(self) -> None:
        """Fit the whitening on the training embeddings of the epoch that just ended (all
        ranks' together, so every rank whitens alike); before the first epoch it is unfitted."""
        if self.whitening is None or not getattr(self, "_white_buffer", None):
            return
        z = torch.cat(self._white_buffer)
        self._white_buffer = []
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, z)
            z = torch.cat(parts)
        self.whitening.fit(z)

    def on_validation_epoch_end(self) -> None:
        """``val/view_acc``, the label-free validation metric: of the held-out videos, the share
        whose second view is the nearest (Euclidean, among all of them) to their first, on the
        retrieval embedding (whitened). Checkpoints of ``data.labels=none`` runs are chosen by
        it."""
        if not self._view_pairs:
            return
        ids, pairs = (
            torch.cat([i for i, _ in self._view_pairs]),
            torch.cat([p for _, p in self._view_pairs]),
        )
        self._view_pairs = []
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, (ids, pairs))
            ids, pairs = torch.cat([i for i, _ in parts]), torch.cat([p for _, p in parts])
        # the distributed sampler repeats samples to even out ranks: one row per sample id
        first = {int(i): n for n, i in reversed(list(enumerate(ids.tolist())))}
        pairs = pairs[sorted(first.values())]
        self.log("val/view_acc", view_retrieval_accuracy(pairs[:, 0], pairs[:, 1]), prog_bar=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "test")

    def predict_step(
        self, batch: dict[str, torch.Tensor] | None, batch_idx: int
    ) -> dict[str, Any] | None:
        if batch is None:
            return None
        return {"embedding": self.embed(batch), "sample_id": batch["sample_id"]}

    def param_groups(self) -> list[dict]:
        """What the optimizer trains (frozen parameters left out); models with per-part learning
        rates return several groups."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def configure_optimizers(self) -> Any:
        """``optimizer`` and ``scheduler`` are Hydra partials (``model.optimizer``,
        ``model.scheduler``, lightning-hydra-template style); without them, Adam at ``lr`` and
        ``weight_decay`` (the paper's Table I) and no schedule."""
        groups = self.param_groups()
        opt = (
            self.optimizer_factory(groups)
            if self.optimizer_factory is not None
            else torch.optim.Adam(
                groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
            )
        )
        if self.scheduler_factory is None:
            return opt
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": self.scheduler_factory(opt), "interval": "epoch"},
        }


def view_retrieval_accuracy(z_a: torch.Tensor, z_b: torch.Tensor) -> float:
    """Share of rows i whose nearest row of ``z_b`` (Euclidean) is row i: finding a video from
    another view of it (a tie with another row counts as found)."""
    d = torch.cdist(z_a.float(), z_b.float())
    own = d.diagonal().unsqueeze(1)
    return float((d < own - 1e-6).sum(dim=1).eq(0).float().mean())
