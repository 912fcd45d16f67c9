"""Callbacks the data and resume tests name in CLI runs (PYTHONPATH=tests): record each training batch per rank,
and interrupt a run the way a cluster does (SIGKILL, SLURM's requeue signal) at a chosen point."""

import os
import signal
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


class KillWhenExists(L.Callback):
    """SIGKILLs this process, as a node failure would, at the first micro-batch after `path` exists."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if Path(self.path).exists():
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAtBatch(L.Callback):
    """Sends this process `signum` at the start of micro-batch `batch` (counted over the run, from 0)."""

    def __init__(self, batch: int, signum: int = int(signal.SIGUSR1)):
        self.batch, self.signum = batch, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.fit_loop.epoch_loop.batch_progress.total.ready - 1 == self.batch:
            os.kill(os.getpid(), self.signum)


class RandomStateRecorder(L.Callback):
    """Writes a fingerprint of this rank's torch random state at the start of training."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            Path(self.out_dir).mkdir(parents=True, exist_ok=True)
            torch.save(torch.get_rng_state(), Path(self.out_dir) / f"rng{trainer.global_rank}.pt")
