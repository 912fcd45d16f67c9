"""A callback the data tests name in CLI runs (PYTHONPATH=tests): records each training batch per rank."""

from pathlib import Path

import lightning as L
import torch


class BatchRecorder(L.Callback):
    def __init__(self, out_dir: str = ""):
        self.out_dir, self.batches = out_dir, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(batch["tokens"].clone())

    def on_train_end(self, trainer, pl_module):
        if self.out_dir:
            Path(self.out_dir).mkdir(parents=True, exist_ok=True)
            torch.save(self.batches, Path(self.out_dir) / f"rank{trainer.global_rank}.pt")
