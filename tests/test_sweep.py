import csv
import json
import shlex
import shutil

import matplotlib.image
import pytest
import torch
import yaml
from tiny_run import checkpoints, final_step, final_weights, tiny_overlay

from phi1.sweep import main, scalars


@pytest.fixture
def sweep_file(tmp_path, code_shards, repo_root):
    """A 2-point learning-rate sweep of the tiny model: 8 steps, a checkpoint every 4, runs in tmp_path/runs."""
    overlay = tiny_overlay(tmp_path / "overlay.yaml", code_shards, tmp_path / "runs", steps=8, checkpoint_every=4)
    spec = {
        "base": [str(repo_root / "experiments" / "tiny.yaml"), str(overlay)],
        "name": "lr",
        "grid": {"model.optimizer.init_args.lr": [3e-3, 1e-3]},
        "fixed": {"data.init_args.batch_size": 2},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_sweep(run_python, *args):
    out = run_python("-m", "phi1.sweep", *args, timeout=300)
    return out.stdout, out.stderr


@pytest.mark.slow  # three tiny `fit` runs: ~25 s on 2 cores
def test_local_sweep_trains_every_point_reports_them_and_a_rerun_skips_done_and_resumes_unfinished(
    tmp_path, sweep_file, run_python, capsys
):
    _, log = run_sweep(run_python, "run", str(sweep_file), "--executor", "local")
    assert "[1/2] lr=0.003: starts" in log and "[2/2] lr=0.001: starts" in log
    runs = tmp_path / "runs" / "lr"
    for slug in ("lr=0.003", "lr=0.001"):
        assert final_step(runs / slug) == 8
    saved = yaml.safe_load(next((runs / "lr=0.001").rglob("config.yaml")).read_text())
    assert saved["model"]["optimizer"]["init_args"]["lr"] == 1e-3 and saved["data"]["init_args"]["batch_size"] == 2

    graded = [("HumanEval/0", True), ("HumanEval/1", True), ("HumanEval/1", False)]  # as evals.evaluate writes
    rows = [{"task_id": t, "completion": "", "passed": ok, "result": "passed" if ok else "failed"} for t, ok in graded]
    (runs / "lr=0.003" / "humaneval-results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["report", str(sweep_file)]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].startswith("| point | model.optimizer.init_args.lr | status | step | ")
    assert "train/loss" in table[0] and "val/loss" in table[0]
    assert table[2].startswith("| lr=0.003 | 0.003 | done | 8 |")
    assert table[3].startswith("| lr=0.001 | 0.001 | done | 8 |")
    rows = list(csv.DictReader(open(runs / "report.csv")))
    assert [r["point"] for r in rows] == ["lr=0.003", "lr=0.001"]
    for row, slug in zip(rows, ("lr=0.003", "lr=0.001"), strict=True):  # the final logged values, unrounded
        logged = scalars(runs / slug)
        for tag in ("train/loss", "val/loss"):
            assert float(row[tag]) == pytest.approx(logged[tag][max(logged[tag])])
    assert float(rows[0]["train/loss"]) != float(rows[1]["train/loss"])  # two different runs
    assert float(rows[0]["humaneval pass@1"]) == 0.75 and rows[1]["humaneval pass@1"] == ""  # (1 + 1/2) / 2
    png = runs / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and matplotlib.image.imread(png).shape[:2] == (450, 1200)

    # lr=0.001 as a kill after its step-4 checkpoint leaves it; lr=0.003 is done and must not be touched
    done_before = {p: p.stat().st_mtime_ns for p in (runs / "lr=0.003").rglob("*") if p.is_file()}
    uninterrupted = final_weights(runs / "lr=0.001")
    saved = checkpoints(runs / "lr=0.001")
    shutil.copy(saved["step000004.ckpt"], saved["last.ckpt"])
    saved["step000008.ckpt"].unlink()
    _, log = run_sweep(run_python, "run", str(sweep_file))
    assert "[1/2] lr=0.003: done (step 8)" in log
    assert f"[2/2] lr=0.001: resumes from {saved['last.ckpt']} (step 4 of 8)" in log
    assert {p: p.stat().st_mtime_ns for p in (runs / "lr=0.003").rglob("*") if p.is_file()} == done_before
    resumed = final_weights(runs / "lr=0.001")
    assert final_step(runs / "lr=0.001") == 8
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)  # dropout 0: bitwise
    assert "Restored all states from the checkpoint" in log


def test_dry_run_prints_each_fit_command_and_the_sbatch_array(tmp_path, sweep_file, capsys):
    assert main(["run", str(sweep_file), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    commands = [shlex.split(line) for line in out.strip().splitlines()]
    assert len(commands) == 2 and "starts" in err
    for command, lr, slug in zip(commands, ("0.003", "0.001"), ("lr=0.003", "lr=0.001"), strict=True):
        assert command[1:4] == ["-m", "phi1.cli", "fit"]
        assert command[command.index("--model.optimizer.init_args.lr") + 1] == lr
        assert command[command.index("--data.init_args.batch_size") + 1] == "2"
        assert command[command.index("--trainer.logger.init_args.name") + 1] == f"lr/{slug}"
        assert "--ckpt_path" not in command
    assert not (tmp_path / "runs").exists()  # nothing ran

    assert main(["run", str(sweep_file), "--executor", "slurm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("srun ") == 2
    script = out[out.index("#!/bin/bash") :]
    for line in (
        "#SBATCH --array=0,1",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --signal=SIGUSR1@90",
        "#SBATCH --requeue",
        f'-m phi1.sweep point {sweep_file} "$SLURM_ARRAY_TASK_ID"',
    ):
        assert line in script
    assert "--gpus-per-node" not in script  # tiny.yaml trains on the CPU
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"grd": {"trainer.max_steps": [1]}}, "unknown key(s) ['grd']"),
        ({"grid": {}}, "'grid' is empty"),
        ({"grid": {"trainer.max_steps": []}}, "grid key 'trainer.max_steps' needs a non-empty list"),
        ({"grid": {"trainer.max_stepz": [1, 2]}}, "point max_stepz=1: "),
        ({"grid": {"model.optimizer.init_args.lr": ["fast"]}}, "point lr=fast: "),
        ({"base": "experiments/no-such.yaml"}, "'base' config(s) ['experiments/no-such.yaml'] not found"),
        ({"name": "../up"}, "'name' must be a folder name"),
        ({"fixed": {"trainer.logger.init_args.name": "x"}}, "is the sweep's to set"),
    ],
)
def test_a_bad_sweep_file_is_one_clear_line_and_exit_2(tmp_path, sweep_file, capsys, change, message):
    spec = {**yaml.safe_load(sweep_file.read_text()), **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and not (tmp_path / "runs").exists()
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {path}: ") and message in err


def test_a_results_file_that_is_not_evals_output_is_one_line_naming_file_and_line(tmp_path):
    from phi1.errors import ConfigError
    from phi1.sweep import graded_pass_at_1

    results = tmp_path / "humaneval-results.jsonl"
    results.write_text('{"task_id": "HumanEval/0", "passed": true}\n{"task_id": "HumanEval/1"}\n')
    with pytest.raises(ConfigError, match=f"{results}:2: not an evals.evaluate result row"):
        graded_pass_at_1(tmp_path)
    results.write_text('{"task_id": "HumanEval/0", "passed": true}\n{"task_id": \n')
    with pytest.raises(ConfigError, match=f"{results}:2: malformed JSON"):
        graded_pass_at_1(tmp_path)
