import csv
from functools import partial

import lightning as L
import pytest
import torch
from test_module import TINY, in_memory_batches

from phi1.callbacks import ExactResume, StepCheckpoint, TokenThroughput
from phi1.errors import ConfigError
from phi1.module import PhiLitModule


def test_throughput_is_logged_at_the_logged_optimizer_steps_only(tmp_path):
    """With accumulation 2 and log_every_n_steps 2, the rate is measured between steps 2, 4, 6 and 8:
    logged at 4, 6, 8 (the first interval, start-up included, is not)."""
    torch.manual_seed(0)
    module = PhiLitModule(TINY, optimizer=partial(torch.optim.AdamW, lr=1e-3))
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=8,
        accumulate_grad_batches=2,
        log_every_n_steps=2,
        enable_progress_bar=False,
        enable_checkpointing=False,
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="", version=""),
        callbacks=[TokenThroughput(peak_flops=1e12)],
    )
    trainer.fit(module, train_dataloaders=in_memory_batches(n=128))
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    logged = [(int(r["step"]), float(r["throughput/tokens_per_sec"])) for r in rows if r["throughput/tokens_per_sec"]]
    assert [step for step, _ in logged] == [3, 5, 7]  # CSVLogger's step is 0-based: global steps 4, 6, 8
    assert all(rate > 0 for _, rate in logged)
    mfu = [float(r["throughput/mfu"]) for r in rows if r["throughput/mfu"]]
    assert len(mfu) == 3 and all(0 < m < 1 for m in mfu)


class SaveAt(L.Callback):
    """Saves a checkpoint at the end of micro-batch `batch` (0-based), as a foreign callback might."""

    def __init__(self, path, batch):
        self.path, self.batch = path, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == self.batch:
            trainer.save_checkpoint(self.path)


def test_exact_resume_refuses_a_checkpoint_saved_inside_an_accumulation_window(tmp_path):
    """Micro-batch 2 of 4 (accumulation 2) is the first of step 2's window: its gradients are in no checkpoint."""

    def run(callbacks, ckpt_path=None):
        torch.manual_seed(0)
        trainer = L.Trainer(
            accelerator="cpu",
            max_steps=2,
            accumulate_grad_batches=2,
            enable_progress_bar=False,
            enable_checkpointing=False,
            logger=False,
            callbacks=[ExactResume(seed=1), *callbacks],
        )
        trainer.fit(PhiLitModule(TINY), train_dataloaders=in_memory_batches(n=64), ckpt_path=ckpt_path)

    run([SaveAt(tmp_path / "inside.ckpt", batch=2), SaveAt(tmp_path / "after.ckpt", batch=1)])
    with pytest.raises(ConfigError, match=f"{tmp_path / 'inside.ckpt'} was saved in the middle of a gradient"):
        run([], ckpt_path=tmp_path / "inside.ckpt")
    run([], ckpt_path=tmp_path / "after.ckpt")  # saved at a step end: resumes


def test_step_checkpoints_keep_the_final_step_and_one_last_ckpt(tmp_path):
    def fit(max_steps, ckpt_path=None):
        torch.manual_seed(0)
        checkpoints = StepCheckpoint(
            dirpath=tmp_path,
            filename="step{step}",
            auto_insert_metric_name=False,
            every_n_train_steps=2,
            save_top_k=-1,
            save_last=True,
        )
        trainer = L.Trainer(
            accelerator="cpu",
            max_steps=max_steps,
            logger=False,
            enable_progress_bar=False,
            limit_val_batches=0,
            callbacks=[checkpoints],
        )
        module = PhiLitModule(TINY, optimizer=partial(torch.optim.AdamW, lr=1e-3))
        trainer.fit(module, train_dataloaders=in_memory_batches(n=128), ckpt_path=ckpt_path)

    fit(5)  # 5 is not a multiple of 2: the final step is saved as well
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "step2.ckpt", "step4.ckpt", "step5.ckpt"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 5
    fit(8, ckpt_path=tmp_path / "step2.ckpt")  # a resume from the first save (made before any last.ckpt)
    assert not list(tmp_path.glob("last-v*.ckpt"))
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 8
