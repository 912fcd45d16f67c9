"""Training under a real SLURM (`make test-slurm` starts a single-node one, experiments/slurm/local-cluster.sh):
the sbatch template with two ranks, a requeue that resumes from Lightning's hpc checkpoint, and a sweep as
one job array. The jobs run on this machine and share its /tmp with the test."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tiny_run import checkpoints, final_step, final_weights, tiny_overlay

from phi1.cli import checkpoint_step

pytestmark = pytest.mark.slurm
VENV_ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
CPU_JOB = ["--ntasks-per-node=1", "--gpus-per-node=0", "--cpus-per-task=1", "--time=15"]  # sbatch args win


@pytest.fixture
def sbatch():
    """Submit a job, returning its id; the test's jobs still queued at its end are cancelled."""
    jobs = []

    def submit(*args: str) -> str:
        out = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, env=VENV_ENV, check=True)
        jobs.append(out.stdout.strip().split(";")[0])
        return jobs[-1]

    yield submit
    if jobs:
        subprocess.run(["scancel", *jobs])


def job_states(job: str) -> list[dict]:
    """`scontrol show job` of a job (one record per array task) as dicts."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, check=True)
    return [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in out.stdout.splitlines()]


def wait(job: str, timeout: float = 900) -> list[dict]:
    deadline = time.monotonic() + timeout
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job])
            pytest.fail(f"job {job} still in the queue after {timeout} s")
        time.sleep(1)
    return job_states(job)


def fit_job(sbatch, tmp_path: Path, name: str, overlay: Path, repo_root: Path, *sbatch_args: str) -> str:
    """Submit experiments/slurm/fit.sbatch on the tiny config from its own folder (its log lands there too)."""
    folder = tmp_path / name
    folder.mkdir()
    tiny = str(repo_root / "experiments" / "tiny.yaml")
    return sbatch(
        *CPU_JOB,
        f"--chdir={folder}",
        f"--output={folder}/slurm.out",
        *sbatch_args,
        str(repo_root / "experiments" / "slurm" / "fit.sbatch"),
        *("--config", tiny, "--config", str(overlay), "--trainer.logger.init_args.name", name),
    )


def test_the_sbatch_template_trains_one_rank_per_task(sbatch, tmp_path, code_shards, repo_root):
    overlay = tiny_overlay(tmp_path / "overlay.yaml", code_shards, tmp_path / "runs", steps=8, checkpoint_every=4)
    job = fit_job(sbatch, tmp_path, "ddp", overlay, repo_root, "--ntasks-per-node=2", "--job-name=phi1-test-ddp")
    [state] = wait(job)
    log = (tmp_path / "ddp" / "slurm.out").read_text()
    assert state["JobState"] == "COMPLETED", log
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log and "GLOBAL_RANK: 1, MEMBER: 2/2" in log
    assert final_step(tmp_path / "runs" / "ddp") == 8


def test_sigusr1_saves_requeues_and_the_job_resumes_to_the_uninterrupted_weights(
    sbatch, tmp_path, code_shards, repo_root
):
    steps = 200
    overlay = tiny_overlay(tmp_path / "overlay.yaml", code_shards, tmp_path / "runs", steps=steps, checkpoint_every=40)
    reference = fit_job(sbatch, tmp_path, "reference", overlay, repo_root, "--job-name=phi1-test-reference")
    job = fit_job(sbatch, tmp_path, "preempted", overlay, repo_root, "--job-name=phi1-test-preempted")
    run = tmp_path / "runs" / "preempted"
    deadline = time.monotonic() + 600
    while "step000040.ckpt" not in checkpoints(run):  # mid-run: after its first checkpoint
        assert time.monotonic() < deadline, f"no step-40 checkpoint after 600 s: {job_states(job)}"
        time.sleep(0.2)
    # what SLURM sends every task 90 s before the time limit (--signal=SIGUSR1@90)
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    [state] = wait(job)
    log = (tmp_path / "preempted" / "slurm.out").read_text()
    assert state["JobState"] == "COMPLETED" and state["Restarts"] == "1", log
    hpc = list(run.glob("hpc_ckpt_*.ckpt"))  # in the run folder, trainer.default_root_dir
    assert len(hpc) == 1, log
    saved_at = checkpoint_step(hpc[0])
    assert 40 <= saved_at < steps
    assert "restart 1: fit" in log and f"Restored all states from the checkpoint at {hpc[0]}" in log
    assert wait(reference)[0]["JobState"] == "COMPLETED"
    assert final_step(run) == steps
    resumed, uninterrupted = final_weights(run), final_weights(tmp_path / "runs" / "reference")
    different = [k for k in uninterrupted if not torch.equal(resumed[k], uninterrupted[k])]
    assert not different, f"resumed at step {saved_at}; weights differ from the uninterrupted run in {different}"


def test_a_sweep_on_slurm_is_one_job_array_and_a_rerun_submits_nothing(tmp_path, code_shards, repo_root):
    overlay = tiny_overlay(tmp_path / "overlay.yaml", code_shards, tmp_path / "runs", steps=8, checkpoint_every=4)
    spec = {
        "base": [str(repo_root / "experiments" / "tiny.yaml"), str(overlay)],
        "name": "slurm-lr",
        "grid": {"model.optimizer.init_args.lr": [3e-3, 1e-3]},
    }
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(spec))

    def run_sweep(*args):
        command = [sys.executable, "-m", "phi1.sweep", "run", str(sweep), "--executor", "slurm", *args]
        return subprocess.run(command, capture_output=True, text=True, env=VENV_ENV, cwd=tmp_path, timeout=120)

    out = run_sweep("--sbatch=--time=15")
    assert out.returncode == 0, out.stderr
    job = out.stdout.split("submitted job array ")[1].split()[0]
    states = wait(job)
    assert sorted(s["ArrayTaskId"] for s in states) == ["0", "1"]
    assert all(s["JobState"] == "COMPLETED" for s in states), [s["JobState"] for s in states]
    for slug in ("lr=0.003", "lr=0.001"):
        assert final_step(tmp_path / "runs" / "slurm-lr" / slug) == 8
    again = run_sweep()
    assert again.returncode == 0 and "every point is done" in again.stderr and "submitted" not in again.stdout
