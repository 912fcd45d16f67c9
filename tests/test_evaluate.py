"""The evaluation CLI end to end as a subprocess, the evaluate() function, its time limits, and pass@k."""

import json
import math
import os
import random
import subprocess
import sys

import pytest

from evals.evaluate import evaluate, main
from evals.pass_at_k import mean_pass_at_k, pass_at_k
from evals.problems import Problem, load_problems
from evals.sandbox import Sandbox, detect_isolation
from evals.time_limits import TimeLimits, cache_file, calibrate

# The samples below are our own programs: where no isolation works, the CLI may run them without.
UNSAFE = ["--unsafe-no-isolation"] if detect_isolation() == "none" else []

RIGHT_0 = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1 :])\n"
WRONG_0 = "    return False\n"
RIGHT_2 = "    return number % 1.0\n"


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def cli_argv(tmp_path, samples, out) -> list[str]:
    """The CLI's arguments on humaneval with `samples` (rows or raw lines) written to tmp_path/samples.jsonl."""
    samples_path = write_jsonl(tmp_path / "samples.jsonl", samples)
    return ["--benchmark", "humaneval", "--samples", str(samples_path), "--out", str(out), *UNSAFE]


@pytest.fixture
def evaluate_cli(tmp_path, monkeypatch, capsys):
    """`python -m evals.evaluate` on humaneval with `samples` in this process (the subprocess test below runs the real
    command); returns (exit status, stderr, output path)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def run(samples, *args, out=None):
        out = out or tmp_path / "results.jsonl"
        capsys.readouterr()
        try:
            status = main([*cli_argv(tmp_path, samples, out), *args])
        except SystemExit as exit:  # argparse's usage errors
            status = exit.code
        return status, capsys.readouterr().err, out

    return run


def test_the_cli_grades_samples_and_ends_with_a_json_summary(run_python, tmp_path):
    samples = [
        {"task_id": "HumanEval/0", "completion": RIGHT_0},
        {"task_id": "HumanEval/0", "completion": WRONG_0},
        {"task_id": "HumanEval/2", "completion": RIGHT_2},
        {"task_id": "HumanEval/2", "completion": "    import sys\n    sys.exit(0)\n"},
    ]
    out = tmp_path / "results.jsonl"
    argv = ["-m", "evals.evaluate", *cli_argv(tmp_path, samples, out)]
    process = run_python(*argv, check=False, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert process.returncode == 0, process.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(row["task_id"], row["passed"]) for row in rows] == [
        ("HumanEval/0", True),
        ("HumanEval/0", False),
        ("HumanEval/2", True),
        ("HumanEval/2", False),
    ]
    assert rows[0]["completion"] == RIGHT_0 and rows[0]["result"] == "passed"
    assert rows[1]["result"].startswith("failed: AssertionError")
    assert rows[3]["result"] == "failed: SystemExit: 0"
    assert all(3.0 <= row["time_limit"] < 3.5 for row in rows)  # 3 s + 4 x a reference of milliseconds
    summary = json.loads(process.stdout.strip().splitlines()[-1])
    limits = summary.pop("time_limits")
    assert summary == {  # pass@10 and pass@100 need 10 and 100 samples of every problem
        "pass@1": pytest.approx(0.5),
        "problems": 2,
        "samples": 4,
        "passed": 2,
        "sandbox": detect_isolation(),
        "benchmark": "humaneval",
    }
    assert limits["clock"] == "cpu" and (limits["floor"], limits["factor"]) == (3.0, 4.0)
    used = [row["time_limit"] for row in rows]
    assert (limits["min"], limits["max"]) == (min(used), max(used))
    assert "162 of 164 problems have no sample" in process.stderr


@pytest.mark.parametrize(
    "samples, message",
    [
        (['{"task_id": "HumanEval/0", "completion": "x"}', "{oops"], ":2: malformed JSON"),
        ([{"task_id": "HumanEval/0"}], ":1: field 'completion' is missing"),
        ([{"task_id": "HumanEval/999", "completion": "x"}], ":1: field 'task_id': 'HumanEval/999' is not a problem"),
        ([{"task_id": 11, "completion": "x"}], ":1: field 'task_id': 11 is not a problem of this benchmark"),
        ([{"task_id": "HumanEval/0", "completion": None}], ":1: field 'completion' must be str, got NoneType"),
    ],
)
def test_bad_samples_exit_2_naming_file_line_and_field(evaluate_cli, tmp_path, samples, message):
    status, err, out = evaluate_cli(samples)
    assert status == 2 and err.startswith("error: ") and len(err.splitlines()) == 1
    assert str(tmp_path / "samples.jsonl") + message in err
    assert not out.exists()


def test_an_existing_output_is_never_clobbered_without_overwrite(evaluate_cli, tmp_path):
    out = tmp_path / "precious.jsonl"
    out.write_text("the user's file\n")
    samples = [{"task_id": "HumanEval/2", "completion": RIGHT_2}]
    status, err, _ = evaluate_cli(samples, out=out)
    assert status == 2 and "--overwrite" in err
    assert out.read_text() == "the user's file\n"
    status, err, _ = evaluate_cli(samples, "--overwrite", out=out)
    assert status == 0, err
    assert json.loads(out.read_text())["passed"] is True


def test_an_unknown_benchmark_exits_2(evaluate_cli):
    status, err, _ = evaluate_cli([{"task_id": "HumanEval/0", "completion": ""}], "--benchmark", "humaneva")
    assert status == 2 and err.startswith("error: unknown benchmark 'humaneva'") and len(err.splitlines()) == 1


def test_evaluate_reports_pass_at_k_up_to_the_fewest_samples_per_problem():
    problems = load_problems("humaneval")[:3]
    samples = [{"task_id": "HumanEval/2", "completion": RIGHT_2 if i < 4 else WRONG_0} for i in range(12)]
    samples += [{"task_id": "HumanEval/1", "completion": WRONG_0} for _ in range(10)]
    rows, summary = evaluate(problems, samples, Sandbox(allow_unsafe=True), progress=False)
    assert [row["passed"] for row in rows] == [True] * 4 + [False] * 18
    assert summary["pass@1"] == pytest.approx((4 / 12 + 0) / 2)
    assert summary["pass@10"] == pytest.approx((pass_at_k(12, 4, 10) + 0) / 2)
    assert "pass@100" not in summary and summary["problems"] == 2 and summary["samples"] == 22


def test_evaluate_rejects_samples_of_unknown_tasks():
    with pytest.raises(ValueError, match="HumanEval/7"):
        evaluate(load_problems("humaneval")[:3], [{"task_id": "HumanEval/7", "completion": ""}], None)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--memory-mb", "1"], "--memory-mb 1: a memory limit of 1 MB is too little to run Python programs"),
        (["--memory-mb", "0"], "--memory-mb must be positive"),
        (["--time-floor", "0"], "--time-floor must be positive"),
        (["--time-factor", "-1"], "--time-factor 0 or more"),
    ],
)
def test_limits_that_cannot_grade_are_refused(evaluate_cli, flags, message):
    status, err, out = evaluate_cli([{"task_id": "HumanEval/2", "completion": RIGHT_2}], *flags)
    assert status == 2 and message in err and not out.exists()


# Time limits (evals/time_limits.py, evals/sandbox.py)

BUSY = "import time\nwhile time.process_time() < {:g}:\n    pass\n"  # CPU seconds, start-up included


def user_problem(task_id: str, reference: str) -> Problem:
    return Problem(task_id, "", (), "assert True", reference=reference)


def test_limits_are_the_floor_plus_the_factor_times_the_references_cpu_time_measured_once(tmp_path):
    problems = [user_problem("slow", BUSY.format(0.3)), user_problem("quick", "x = 1"), user_problem("none", "")]
    sandbox = Sandbox(allow_unsafe=True)
    limits = calibrate(problems, sandbox, floor=1.0, factor=2.0, progress=False, cache_dir=tmp_path)
    assert 0.25 < limits.reference_seconds["slow"] < 0.4 and limits.reference_seconds["quick"] < 0.05
    assert "none" not in limits.reference_seconds and limits("none") == 1.0  # no reference: the floor
    assert limits("slow") == pytest.approx(1.0 + 2.0 * limits.reference_seconds["slow"])
    assert limits.summary(["slow", "quick"])["max"] == round(limits("slow"), 3)
    cached = json.loads(cache_file(tmp_path).read_text())
    assert cached["interpreter"] and cached["cpu"] and len(cached["seconds"]) == 2
    # Measured once: a second calibration reads the cache; other floor and factor reuse it too.
    again = calibrate(problems, sandbox, floor=3.0, factor=4.0, progress=False, cache_dir=tmp_path)
    assert again.reference_seconds == limits.reference_seconds and again("slow") > limits("slow")
    # A changed reference is a new program, measured afresh.
    changed = calibrate([user_problem("slow", BUSY.format(0.1))], sandbox, progress=False, cache_dir=tmp_path)
    assert changed.reference_seconds["slow"] < 0.2


def test_a_failing_reference_gets_the_floor_with_a_note(tmp_path, capsys):
    limits = calibrate([user_problem("bad", "assert False")], Sandbox(allow_unsafe=True), cache_dir=tmp_path)
    assert limits("bad") == 3.0 and "reference solutions of 1 problems fail (bad)" in capsys.readouterr().err


def test_factor_zero_gives_every_problem_the_floor_without_measuring(tmp_path):
    limits = calibrate([user_problem("t", BUSY.format(0.3))], Sandbox(allow_unsafe=True), 2.0, 0.0, cache_dir=tmp_path)
    assert limits("t") == 2.0 and not cache_file(tmp_path).exists()


def burn_cpus(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def test_grades_do_not_depend_on_workers_or_load():
    """The same samples, graded with one worker on a quiet machine and with a worker per core beside a CPU burner per
    core, give identical rows. Wall-clock limits fail this: a program needing 0.6 of its limit in CPU takes more than
    its limit in wall time when it gets half a core."""
    problems = [user_problem(f"t/{i}", "") for i in range(6)]
    completions = [
        BUSY.format(0.3),  # 0.6 of its limit: passes on any load
        "import time\ntime.sleep(0.7)\n",  # more wall time than its limit, little CPU: passes
        "while True:\n    pass\n",  # times out
        "assert 1 + 1 == 3\n",  # fails
        "x = sorted(range(1000))\n",  # passes
        BUSY.format(0.8),  # 1.6 x its limit in CPU: times out on any load
    ]
    samples = [{"task_id": p.task_id, "completion": c} for p, c in zip(problems, completions, strict=True)]
    sandbox, limits = Sandbox(allow_unsafe=True), TimeLimits(floor=0.5, factor=0.0)
    quiet, _ = evaluate(problems, samples, sandbox, workers=1, progress=False, limits=limits)
    burners = burn_cpus(os.cpu_count() or 1)
    try:
        busy, _ = evaluate(problems, samples, sandbox, workers=os.cpu_count(), progress=False, limits=limits)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert [row["passed"] for row in quiet] == [True, True, False, False, True, False]
    assert [quiet[i]["result"] for i in (2, 5)] == ["timed out", "timed out"]
    assert busy == quiet


# pass@k (evals/pass_at_k.py)


def test_pass_at_k_matches_the_binomial_definition():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 200)
        c, k = rng.randint(0, n), rng.randint(1, n)
        expected = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_edge_cases():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 10) == 1.0
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2)
    assert pass_at_k(1000, 1, 999) == pytest.approx(0.999)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(5, 1, 6)


def test_mean_pass_at_k_reports_only_k_that_every_task_reaches():
    assert mean_pass_at_k([(10, 5), (20, 0)]) == {"pass@1": 0.25, "pass@10": pytest.approx((1 - 0) / 2)}
    assert mean_pass_at_k([(1, 1), (1, 0)]) == {"pass@1": 0.5}
    assert mean_pass_at_k([]) == {}
