"""Backbones, temporal heads and LightningModules."""

from media_retrieval.models.backbones import create_backbone, list_backbones, register_backbone
from media_retrieval.models.cnn_lstm import CNNLSTM
from media_retrieval.models.temporal import TemporalHead

__all__ = ["CNNLSTM", "TemporalHead", "create_backbone", "list_backbones", "register_backbone"]
