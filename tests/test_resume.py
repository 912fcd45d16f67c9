"""Exact resume through the real CLI, as the paper trains: dropout 0.1, gradient accumulation 2, 2 loader workers.

A run is killed (SIGKILL) after its step-6 checkpoint, or sent SLURM's requeue signal in the middle of an
accumulation window; the resumed run must end with bitwise the weights of an uninterrupted one. The runs that are
killed are real `python -m phi1.cli` processes; the one-process reference and resumed runs call `phi1.cli.main` in
the test's process (the CLI's import is most of a launch), the 2-process DDP runs are all real processes.
"""

import json
import logging
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import REPO
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from phi1.cli import main

STEPS, CKPT_EVERY = 12, 6


def fit_config(tmp_path, name, shards, callbacks=(), devices=1, val_every=0) -> list[str]:
    """`fit --config ...` on tiny.yaml with the paper's dropout, accumulation 2 and 2 workers, logs in tmp_path/runs."""
    every = {"every_n_train_steps": CKPT_EVERY, "save_last": True, "save_top_k": -1}
    name_by_step = {"filename": "step{step}", "auto_insert_metric_name": False}
    checkpoint = {"class_path": "phi1.callbacks.StepCheckpoint", "init_args": {**every, **name_by_step}}
    overlay = {
        "trainer": {
            "max_steps": STEPS,
            "accumulate_grad_batches": 2,
            "val_check_interval": val_every or 10_000,  # micro-batches
            "limit_val_batches": 2 if val_every else 0,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {"init_args": {"save_dir": str(tmp_path / "runs"), "name": name}},
            "callbacks": [checkpoint, *callbacks],
            **({"strategy": "ddp", "devices": devices} if devices > 1 else {}),
        },
        "model": {
            "config": {"block_size": 64, "attn_dropout": 0.1, "resid_dropout": 0.1},
            "scheduler": {"init_args": {"warmup_steps": 2}},
        },
        "data": {"init_args": {"sources": {str(shards): 1.0}, "seq_len": 64, "batch_size": 2, "num_workers": 2}},
    }
    path = tmp_path / f"{name}-{len(list(tmp_path.glob(f'{name}-*.json')))}.json"
    path.write_text(json.dumps(overlay))
    return ["fit", "--config", str(REPO / "experiments" / "tiny.yaml"), "--config", str(path)]


def launch(run_python, tmp_path, name, shards, *extra, callbacks=(), devices=1, env=None, check=True, val_every=0):
    """`python -m phi1.cli fit` as a real process (see `fit_config`)."""
    config = fit_config(tmp_path, name, shards, callbacks, devices, val_every)
    return run_python(
        "-m", "phi1.cli", *config, *extra,
        env={"PYTHONPATH": str(REPO / "tests"), **(env or {})}, check=check, timeout=300,
    )  # fmt: skip


def start(tmp_path, name, shards, *extra, callbacks=(), devices=1, val_every=0) -> subprocess.Popen:
    """`launch` without waiting for it: its output goes to tmp_path/<name>.log."""
    config = fit_config(tmp_path, name, shards, callbacks, devices, val_every)
    with open(tmp_path / f"{name}.log", "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "phi1.cli", *config, *extra], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO / "tests")},
        )  # fmt: skip


def fit_here(monkeypatch, tmp_path, name, shards, *extra, env=None) -> str:
    """`fit_config`'s run through `phi1.cli.main` in this process, with `env` set meanwhile; returns its log."""
    for variable in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):  # seed_everything sets them: unset again afterwards
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)
    for variable, value in (env or {}).items():
        monkeypatch.setenv(variable, value)
    log = Capture()
    for logger in ("lightning.pytorch", "lightning.fabric"):
        monkeypatch.setattr(logging.getLogger(logger), "handlers", [log])
    main([*fit_config(tmp_path, name, shards), *extra])
    return log.text


class Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.text = ""

    def emit(self, record):
        self.text += self.format(record) + "\n"


def weights(run_dir) -> dict:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == STEPS
    return ckpt["state_dict"]


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    differ = {k: (a[k] - b[k]).abs().max().item() for k in a if not torch.equal(a[k], b[k])}
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, max |diff| {max(differ.values(), default=0):.2e}"


def kill_at_checkpoint(run_dir):
    return {
        "class_path": "batch_recorder.KillWhenExists",
        "init_args": {"path": str(run_dir / "checkpoints" / f"step{CKPT_EVERY}.ckpt")},
    }  # noqa: E501


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, code_shards):
    """The reference: one process, 12 steps, never stopped."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    with pytest.MonkeyPatch.context() as monkeypatch:
        fit_here(monkeypatch, tmp, "a", code_shards)
    return weights(tmp / "runs" / "a")


def test_killed_run_resumed_with_ckpt_path_ends_with_the_same_weights(
    uninterrupted, tmp_path, code_shards, run_python, monkeypatch
):
    run = tmp_path / "runs" / "b"
    killed = launch(run_python, tmp_path, "b", code_shards, callbacks=[kill_at_checkpoint(run)], check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == CKPT_EVERY
    fit_here(monkeypatch, tmp_path, "b", code_shards, "--ckpt_path", "last")
    assert_same(weights(run), uninterrupted)
    assert (run / "config.yaml").is_file() and (run / "config-1.yaml").is_file()  # each launch's config kept


def test_requeue_signal_mid_accumulation_saves_at_the_step_end_and_the_requeued_run_ends_the_same(
    uninterrupted, tmp_path, code_shards, run_python, monkeypatch
):
    """SLURM's USR1 arrives at micro-batch 9, the second of step 5's window; Lightning would save its hpc
    checkpoint right there, without that window's first gradients. It must save after step 5 instead, and the
    requeued job (SLURM_RESTART_COUNT=1, no --ckpt_path) must resume from it and end where the reference does."""
    run = tmp_path / "runs" / "c"
    # PATH finds no scontrol: Lightning's `scontrol requeue` after the save fails at once instead of waiting 9 s for
    # the controller of a SLURM that is installed here but not running
    slurm = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "phi1-test", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "PATH": str(tmp_path)}  # fmt: skip
    hpc = run / "hpc_ckpt_1.ckpt"
    callbacks = [
        {"class_path": "batch_recorder.SignalAtBatch", "init_args": {"batch": 9}},
        {"class_path": "batch_recorder.KillWhenExists", "init_args": {"path": str(hpc)}},
    ]
    killed = launch(run_python, tmp_path, "c", code_shards, callbacks=callbacks, env=slurm, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    saved = torch.load(hpc, weights_only=True)
    assert saved["global_step"] == 5
    assert saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["processed"] == 10
    requeued = fit_here(monkeypatch, tmp_path, "c", code_shards, env={**slurm, "SLURM_RESTART_COUNT": "1"})
    assert f"from {hpc}" in requeued
    assert_same(weights(run), uninterrupted)


@pytest.mark.slow
def test_ddp_two_processes_killed_and_resumed_end_with_the_same_weights(tmp_path, code_shards, run_python):
    """2-process DDP (gloo): the ranks draw different dropout masks, see disjoint samples, and a SIGKILL after
    the step-6 checkpoint followed by --ckpt_path resumes to bitwise the uninterrupted weights."""

    def recorders(name):
        out = str(tmp_path / name / "record")
        return [
            {"class_path": "batch_recorder.BatchRecorder", "init_args": {"out_dir": out}},
            {"class_path": "batch_recorder.RandomStateRecorder", "init_args": {"out_dir": out}},
        ]

    ddp = {"devices": 2, "val_every": 8}  # validation at micro-batches 8, 16, 24: before and after the kill
    reference = start(tmp_path, "a", code_shards, callbacks=recorders("a"), **ddp)  # beside the killed run
    run = tmp_path / "runs" / "b"
    callbacks = [*recorders("b"), kill_at_checkpoint(run)]
    killed = launch(run_python, tmp_path, "b", code_shards, callbacks=callbacks, check=False, **ddp)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert reference.wait(timeout=300) == 0, (tmp_path / "a.log").read_text()
    launch(run_python, tmp_path, "b", code_shards, "--ckpt_path", "last", callbacks=recorders("b"), **ddp)
    assert_same(weights(run), weights(tmp_path / "runs" / "a"))
    val = EventAccumulator(str(tmp_path / "runs" / "a")).Reload()
    assert len(val.Scalars("val/loss/code")) == len(val.Scalars("val/loss")) == 3  # reduced over both ranks

    record = tmp_path / "a" / "record"
    assert not torch.equal(torch.load(record / "rng0.pt"), torch.load(record / "rng1.pt"))  # different dropout
    rank0, rank1 = (torch.cat(torch.load(record / f"rank{r}.pt")) for r in range(2))
    assert len(rank0) == STEPS * 2 * 2 and not any(torch.equal(a, b) for a in rank0 for b in rank1)
