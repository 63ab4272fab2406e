"""The torch Dataset over a split's rows (batches carry their sample ids) and the record of
what was skipped."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from torch.utils.data import Dataset

from media_retrieval.data.discovery import (
    Skipped,
)
from media_retrieval.data.splits import (
    Split,
)
from media_retrieval.errors import DataError

log = logging.getLogger(__name__)


def write_skipped_csv(skipped: list[Skipped], path: Path) -> None:
    """Every file left out, with the reason (written even when empty: "nothing skipped")."""

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "reason"])
        for s in sorted(set(skipped), key=lambda s: s.path):
            w.writerow([s.path, s.reason])


class SplitDataset(Dataset):
    def __init__(self, split: Split, ids: list[int], load, train: bool = False) -> None:
        self.split, self.ids, self.load, self.train = split, ids, load, train

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict | None:
        sid = self.ids[i]
        item = self.split.items[sid]
        try:
            data = self.load(item, self.train)
        except (DataError, OSError, RuntimeError, ValueError) as exc:
            log.warning("skipping %s in this batch: %s", item.path, exc)
            return None  # dropped by skip_failed_collate
        label = data.pop("label_as", item.label)
        return {
            "sample_id": sid,
            "label": self.split.class_index[label],
            "target": self.split.train_index.get(label, -1),
            **data,
        }
