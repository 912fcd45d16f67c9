"""Learning-rate schedule of phi-1 (paper §2.3): linear warmup, then linear (or cosine) decay to a floor."""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from phi1.errors import ConfigError


def warmup_decay_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float, decay: str) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): step/warmup during warmup, so the first
    update is at lr 0 as in the usual linear schedule, 1.0 at `warmup_steps`, `min_lr_ratio` from `total_steps` on."""
    if step < warmup_steps:
        return step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    shape = 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


class WarmupDecayLR(LambdaLR):
    """Step-wise schedule. `PhiLitModule` passes `total_steps` = the Trainer's `max_steps`, so a YAML gives
    only `warmup_steps`, `min_lr_ratio` and `decay`."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int,
        min_lr_ratio: float = 0.0,
        decay: str = "linear",
    ):
        if decay not in ("linear", "cosine"):
            raise ConfigError(f"model.scheduler decay={decay!r}: choose 'linear' or 'cosine'")
        if not 0 <= warmup_steps <= total_steps:
            raise ConfigError(
                f"model.scheduler warmup_steps={warmup_steps}: "
                f"need 0 <= warmup_steps <= trainer.max_steps ({total_steps})"
            )
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ConfigError(f"model.scheduler min_lr_ratio={min_lr_ratio}: must lie in [0, 1]")
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        super().__init__(
            optimizer, lambda step: warmup_decay_factor(step, warmup_steps, total_steps, min_lr_ratio, decay)
        )
