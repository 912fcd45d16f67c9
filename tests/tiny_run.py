"""Short real training runs for the sweep and SLURM tests: an overlay on experiments/tiny.yaml, and reading
the final weights of a run."""

from pathlib import Path

import torch
import yaml

from phi1.cli import checkpoint_step, newest_checkpoint


def tiny_overlay(path: Path, shards: Path, runs: Path, steps: int, checkpoint_every: int) -> Path:
    """An extra --config over experiments/tiny.yaml: the test's shards in 64-token blocks read without loader
    workers, `steps` optimizer steps with a checkpoint (and last.ckpt) every `checkpoint_every`, logs in `runs`."""
    config = {
        "trainer": {
            "max_steps": steps,
            "val_check_interval": checkpoint_every,
            "limit_val_batches": 2,
            "log_every_n_steps": 2,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {"init_args": {"save_dir": str(runs)}},
            "callbacks": [
                {
                    "class_path": "phi1.callbacks.StepCheckpoint",
                    "init_args": {
                        "every_n_train_steps": checkpoint_every,
                        "save_top_k": -1,
                        "save_last": True,
                        "filename": "step{step:06d}",
                        "auto_insert_metric_name": False,
                    },
                }
            ],
        },
        "model": {"config": {"block_size": 64}, "scheduler": {"init_args": {"warmup_steps": 2}}},
        "data": {"init_args": {"sources": {str(shards): 1.0}, "seq_len": 64, "num_workers": 0}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def checkpoints(run_dir: Path) -> dict[str, Path]:
    """A run's checkpoint files by name (step000004.ckpt, last.ckpt, hpc_ckpt_1.ckpt)."""
    return {p.name: p for p in sorted(run_dir.rglob("*.ckpt"))}


def final_step(run_dir: Path) -> int | None:
    """The global step of the run's newest checkpoint (a resumed run's last may be `last-v1.ckpt`)."""
    newest = newest_checkpoint(run_dir)
    return checkpoint_step(newest) if newest else None


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(newest_checkpoint(run_dir), map_location="cpu", weights_only=True)["state_dict"]
