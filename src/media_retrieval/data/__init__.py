"""Media discovery, decoding, splits, frame-feature cache, built-in corpus and DataModules."""

from media_retrieval.data.datamodule import VideoRetrievalDataModule
from media_retrieval.data.datasets import BuiltinDataModule, CrossDataModule, FolderDataModule
from media_retrieval.data.discovery import MediaItem, discover
from media_retrieval.data.splits import Split, SplitItem

__all__ = [
    "BuiltinDataModule",
    "CrossDataModule",
    "FolderDataModule",
    "MediaItem",
    "Split",
    "SplitItem",
    "VideoRetrievalDataModule",
    "discover",
]
