"""Callback logging training throughput: tokens/s and model FLOPs utilization (MFU).

MFU = model FLOPs per second per device / peak FLOPs per device. Model FLOPs per token come from
`Phi.flops_per_token` (6N + attention, PaLM appendix B); the peak from `PEAK_FLOPS` (dense bf16, vendor
sheets) unless `peak_flops` is given. On a device the table does not know (the CPU among them) MFU is
logged only when `peak_flops` is set.
"""

import time
from collections import deque

import lightning as L
import torch

PEAK_FLOPS = {"a100": 312e12, "h100": 989e12, "h200": 989e12}


def peak_flops_of(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    return next((flops for chip, flops in PEAK_FLOPS.items() if chip in name), None)


class ThroughputMonitor(L.Callback):
    def __init__(self, peak_flops: float | None = None, window: int = 10):
        """peak_flops: per-device peak to measure MFU against (overrides `PEAK_FLOPS`);
        window: number of batches the rates are averaged over."""
        self.peak_flops, self.window = peak_flops, window

    def on_train_start(self, trainer, pl_module):
        self.peak = self.peak_flops or peak_flops_of(pl_module.device)
        self.history = deque(maxlen=self.window + 1)  # (time, tokens this device has seen)
        self.tokens = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        B, T = batch["tokens"][:, :-1].shape
        self.tokens += B * T
        self.history.append((time.perf_counter(), self.tokens))
        if len(self.history) < 2:  # the first batch only starts the clock
            return
        (t0, n0), (t1, n1) = self.history[0], self.history[-1]
        per_device = (n1 - n0) / (t1 - t0)
        metrics = {"throughput/tokens_per_sec": per_device * trainer.world_size}
        if self.peak:
            metrics["throughput/mfu"] = per_device * pl_module.model.flops_per_token(T) / self.peak
        pl_module.log_dict(metrics, on_step=True, on_epoch=False)
