"""Run the RetrievalCallback on a model whose embedding depends only on the sample id.

    python tests/helpers/id_embedding_eval.py OUT_DIR DEVICES

37 samples in batches of 5 (uneven per rank; the DistributedSampler repeats one sample on
2 processes), so results must come out bit-identical whatever the number of processes.
"""

import sys

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from media_retrieval.callbacks.retrieval import RetrievalCallback
from media_retrieval.data.splits import Split, SplitItem

N = 37
ITEMS = [
    SplitItem(
        path=f"/x/{i}.mp4",
        dataset="ds_a" if i % 3 else "ds_b",
        label=f"c{i % 4}",
        video_id=f"v{i}",
        role="query" if i % 7 == 0 else "gallery",
        seen=i % 4 < 2,
    )
    for i in range(N)
]


class IdDataset(Dataset):
    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict:
        return {"sample_id": i, "label": i % 4, "target": -1}


class IdModel(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def embed(self, batch: dict) -> torch.Tensor:
        ids = batch["sample_id"].double()
        cls = (batch["sample_id"] % 4).double()
        return torch.stack(
            [torch.sin(ids * f) * 0.3 + torch.cos(cls * f) for f in range(1, 9)], 1
        ).float()

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        return {"embedding": self.embed(batch), "sample_id": batch["sample_id"]}


class IdData(L.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.split = Split(ITEMS, ["c0", "c1"])

    def test_dataloader(self) -> DataLoader:
        return DataLoader(IdDataset(), batch_size=5)


if __name__ == "__main__":
    out, devices = sys.argv[1], int(sys.argv[2])
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            RetrievalCallback(
                k=[1, 5, 10], delta=0.5, deltas=[0.2, 0.5, 0.8], output_dir=out, pictures=False
            )
        ],
    )
    trainer.test(IdModel(), datamodule=IdData(), verbose=False)
