"""Training callbacks of `phi1.cli fit`: step checkpoints, and throughput with model FLOPs utilization (MFU).

MFU = model FLOPs per second per device / peak FLOPs per device. Model FLOPs per token come from
`Phi.flops_per_token` (6N + attention, PaLM appendix B); the peak from `PEAK_FLOPS` (dense bf16, vendor
sheets) unless `peak_flops` is given. On a device the table does not know (the CPU among them) MFU is
logged only when `peak_flops` is set.
"""

import time

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

PEAK_FLOPS = {"a100": 312e12, "h100": 989e12, "h200": 989e12}


class StepCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` that, on a resumed run, does not save again at the optimizer step it resumed from.

    Lightning does not restore the step of the last save, so with gradient accumulation the first
    micro-batch after a resume would write a checkpoint in the middle of an accumulation, over the
    good one of the same name.
    """

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        self._last_global_step_saved = trainer.global_step


def peak_flops_of(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    return next((flops for chip, flops in PEAK_FLOPS.items() if chip in name), None)


class TokenThroughput(L.Callback):
    """Logs `throughput/tokens_per_sec` (all devices) and `throughput/mfu` at every optimizer step the
    Trainer logs (`log_every_n_steps`), averaged since the previous one.

    Only those steps wait for the device (`torch.cuda.synchronize`): the clock is read after the queued
    work has finished, so the interval between two of them is exact while every other micro-batch runs
    asynchronously. The first interval after the start (compilation, loader warm-up) is not logged.
    """

    def __init__(self, peak_flops: float | None = None):
        """peak_flops: per-device peak to measure MFU against (overrides `PEAK_FLOPS`)."""
        self.peak_flops = peak_flops

    def on_train_start(self, trainer, pl_module):
        self.peak = self.peak_flops or peak_flops_of(pl_module.device)
        self.tokens = 0  # tokens this device has trained on since `self.since`
        self.since = None  # time of the last synchronized step; None until the first one
        self.step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        B, T = batch["tokens"][:, :-1].shape
        self.tokens += B * T
        stepped, self.step = trainer.global_step != self.step, trainer.global_step  # an optimizer step ended
        if not stepped or trainer.global_step % trainer.log_every_n_steps:  # Lightning logs at these steps only
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        if self.since is not None:
            per_device = self.tokens / (now - self.since)
            metrics = {"throughput/tokens_per_sec": per_device * trainer.world_size}
            if self.peak:
                metrics["throughput/mfu"] = per_device * pl_module.model.flops_per_token(T) / self.peak
            pl_module.log_dict(metrics, on_step=True, on_epoch=False)
        self.since, self.tokens = now, 0
