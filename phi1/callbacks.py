"""Training callbacks of `phi1.cli fit`: step checkpoints, exact resume, and throughput with model FLOPs
utilization (MFU).

`ExactResume` (added by `phi1.cli` to every `fit`) keeps what Lightning's checkpoint leaves out of an exact
resume: every rank's random state, and SLURM requeue saves at optimizer-step ends only.

MFU = model FLOPs per second per device / peak FLOPs per device. Model FLOPs per token come from
`Phi.flops_per_token` (6N + attention, PaLM appendix B); the peak from `PEAK_FLOPS` (dense bf16, vendor
sheets) unless `peak_flops` is given. On a device the table does not know (the CPU among them) MFU is
logged only when `peak_flops` is set.
"""

import os
import random
import signal
import time

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from phi1.errors import ConfigError

PEAK_FLOPS = {"a100": 312e12, "h100": 989e12, "h200": 989e12}


class StepCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` for step-counted runs:

    - on a resumed run it does not save again at the optimizer step it resumed from (Lightning does not restore
      the step of the last save, so with gradient accumulation the first micro-batch after a resume would write
      a checkpoint in the middle of an accumulation, over the good one of the same name);
    - the run's final step is saved even when `max_steps` is not a multiple of `every_n_train_steps`;
    - `last.ckpt` is overwritten, never versioned (`last-v1.ckpt`), so it is always the run's newest.
    """

    def __init__(self, *args, enable_version_counter: bool = False, **kwargs):
        super().__init__(*args, enable_version_counter=enable_version_counter, **kwargs)

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        self._last_global_step_saved = trainer.global_step

    def on_train_end(self, trainer, pl_module):
        if not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)


def random_state(device: torch.device) -> dict:
    """This process's random state (torch CPU, the device's CUDA generator, numpy, Python `random`), as
    tensors and numbers, so a checkpoint holding it still loads with `weights_only=True`."""
    _, key, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss_next},
    }


def set_random_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"].tolist()), p["gauss"]))


def seed_rank(seed: int, rank: int, step: int = 0) -> None:
    """Seed torch (CPU and every CUDA device), numpy and `random` for one rank: ranks draw different dropout
    masks, and the same (seed, rank, step) the same ones."""
    torch_seed, numpy_seed, python_seed = np.random.SeedSequence([seed, rank, step]).generate_state(3, np.uint64)
    torch.manual_seed(int(torch_seed))
    np.random.seed(int(numpy_seed) % 2**32)
    random.seed(int(python_seed))


class ExactResume(L.Callback):
    """Makes a resumed run train on bitwise what the uninterrupted one would (with the DataModule's sample
    state and Lightning's model, optimizer, scheduler and loop state).

    - Random state: at the start of training each rank seeds its generators from (seed, rank), so ranks
      draw different dropout masks; every checkpoint holds every rank's state (gathered to rank 0), and a
      resume sets each rank's back before its first step. A resume on a different number of ranks seeds
      from (seed, rank, step) instead, and says so. DataLoader workers draw nothing random here
      (`phi1.data`), and their seeds follow the sample position, not this state.
    - SLURM requeue: Lightning saves its `hpc_ckpt_N.ckpt` inside the signal handler, wherever the step
      stands; in the middle of a gradient-accumulation window that checkpoint lacks the micro-batches'
      gradients, and the resumed run would take a short optimizer step. Here the signal only marks the
      save as due; all ranks agree on it and Lightning's handler saves and requeues at the end of the
      optimizer step in progress. Give SLURM's `--signal=USR1@T` a T above one step plus a save.
    - A checkpoint saved mid-window by anything else is refused on resume, naming the file.

    seed: the base seed; default the `seed_everything` value (`PL_GLOBAL_SEED`).
    """

    def __init__(self, seed: int | None = None):
        self.seed = seed
        self.loaded = None  # the checkpoint's per-rank states, until training starts
        self.due = None  # the requeue signal received, until the step in progress ends
        self.handler = None  # the requeue handler Lightning installed, which this one defers
        self.step_end_batches = 0  # batches processed at the last optimizer-step end

    def base_seed(self) -> int:
        return self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))

    @staticmethod
    def processed(trainer) -> int:
        return trainer.fit_loop.epoch_loop.batch_progress.total.processed

    def on_train_start(self, trainer, pl_module):
        self.step_end_batches, self.step = self.processed(trainer), trainer.global_step
        rank, world = trainer.global_rank, trainer.world_size
        if self.loaded is not None and len(self.loaded) == world:
            set_random_state(self.loaded[rank], pl_module.device)
        else:
            if self.loaded is not None:
                rank_zero_info(
                    f"resume: the checkpoint holds the random state of {len(self.loaded)} ranks, this run has "
                    f"{world}; each rank seeds from (seed, rank, step {trainer.global_step}) instead"
                )
            seed_rank(self.base_seed(), rank, trainer.global_step)  # step 0 unless resumed without our state
        self.loaded = None
        self.defer_requeue(trainer)

    def defer_requeue(self, trainer):
        # the Trainer's cluster environment (SLURMEnvironment) is public only on parallel strategies; Lightning's own
        # signal handling reads it where this does
        environment = getattr(trainer._accelerator_connector, "cluster_environment", None)
        signum = getattr(environment, "requeue_signal", None)
        if signum is None or not getattr(environment, "auto_requeue", False):
            return
        handler = signal.getsignal(signum)
        if callable(handler):
            self.handler, self.signum = handler, signum
            signal.signal(signum, self.mark_due)

    def mark_due(self, signum, frame):
        self.due = signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            return  # mid-window
        self.step, self.step_end_batches = trainer.global_step, self.processed(trainer)
        if self.handler is not None:
            due = self.due is not None
            if trainer.world_size > 1:
                due = trainer.strategy.reduce_boolean_decision(due, all=False)
            if due:
                self.due = None
                self.handler(self.signum, None)  # Lightning's: hpc checkpoint, then `scontrol requeue`

    def on_train_end(self, trainer, pl_module):
        if self.handler is not None:
            signal.signal(self.signum, self.handler)
            self.handler = None

    def state_dict(self) -> dict:
        trainer = self.trainer
        state = random_state(trainer.strategy.root_device)
        states = [state]
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            states = [None] * trainer.world_size
            dist.all_gather_object(states, state)
        mid_window = trainer.state.fn == "fit" and self.processed(trainer) != self.step_end_batches
        return {"ranks": states, "mid_window": mid_window}

    def setup(self, trainer, pl_module, stage):
        self.trainer = trainer

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        self.ckpt_path = trainer.ckpt_path

    def load_state_dict(self, state: dict):
        if state["mid_window"]:
            raise ConfigError(
                f"--ckpt_path {self.ckpt_path} was saved in the middle of a gradient-accumulation window; it lacks "
                "that window's gradients, so resuming would take a short optimizer step; resume from a checkpoint "
                "saved at a step end (StepCheckpoint's, or an hpc checkpoint written with ExactResume)"
            )
        self.loaded = state["ranks"]


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
    asynchronously (Lightning's progress bar, though, reads its metrics such as `train/loss` from the device
    at every refresh: `TQDMProgressBar(refresh_rate)` or `enable_progress_bar: false` spares that wait).
    The first interval after the start (compilation, loader warm-up) is not logged.
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
