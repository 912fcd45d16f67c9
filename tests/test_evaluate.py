"""The evaluation CLI end to end as a subprocess, the evaluate() function, and the pass@k estimator."""

import json
import math
import random

import pytest

from evals.evaluate import evaluate
from evals.pass_at_k import mean_pass_at_k, pass_at_k
from evals.problems import load_problems
from evals.sandbox import Sandbox, detect_isolation

# The samples below are our own programs: where no isolation works, the CLI may run them without.
UNSAFE = ["--unsafe-no-isolation"] if detect_isolation() == "none" else []

RIGHT_0 = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1 :])\n"
WRONG_0 = "    return False\n"
RIGHT_2 = "    return number % 1.0\n"


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


@pytest.fixture
def evaluate_cli(run_python, tmp_path):
    """Run the CLI on humaneval with `samples` (rows or raw lines); returns (process, output path)."""

    def run(samples, *args, out=None):
        out = out or tmp_path / "results.jsonl"
        samples_path = write_jsonl(tmp_path / "samples.jsonl", samples)
        argv = ["-m", "evals.evaluate", "--benchmark", "humaneval", "--samples", str(samples_path), "--out", str(out)]
        return run_python(*argv, *UNSAFE, *args, check=False), out

    return run


def test_the_cli_grades_samples_and_ends_with_a_json_summary(evaluate_cli):
    samples = [
        {"task_id": "HumanEval/0", "completion": RIGHT_0},
        {"task_id": "HumanEval/0", "completion": WRONG_0},
        {"task_id": "HumanEval/2", "completion": RIGHT_2},
        {"task_id": "HumanEval/2", "completion": "    import sys\n    sys.exit(0)\n"},
    ]
    process, out = evaluate_cli(samples)
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
    summary = json.loads(process.stdout.strip().splitlines()[-1])
    assert summary == {  # pass@10 and pass@100 need 10 and 100 samples of every problem
        "pass@1": pytest.approx(0.5),
        "problems": 2,
        "samples": 4,
        "passed": 2,
        "sandbox": detect_isolation(),
        "benchmark": "humaneval",
    }
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
    process, out = evaluate_cli(samples)
    assert process.returncode == 2
    assert str(tmp_path / "samples.jsonl") + message in process.stderr
    assert not out.exists()


def test_an_existing_output_is_never_clobbered_without_overwrite(evaluate_cli, tmp_path):
    out = tmp_path / "precious.jsonl"
    out.write_text("the user's file\n")
    samples = [{"task_id": "HumanEval/2", "completion": RIGHT_2}]
    process, _ = evaluate_cli(samples, out=out)
    assert process.returncode == 2 and "--overwrite" in process.stderr
    assert out.read_text() == "the user's file\n"
    process, _ = evaluate_cli(samples, "--overwrite", out=out)
    assert process.returncode == 0, process.stderr
    assert json.loads(out.read_text())["passed"] is True


def test_an_unknown_benchmark_exits_2(run_python, tmp_path):
    samples = write_jsonl(tmp_path / "samples.jsonl", [{"task_id": "HumanEval/0", "completion": ""}])
    argv = ["--benchmark", "humaneva", "--samples", str(samples), "--out", str(tmp_path / "out.jsonl")]
    process = run_python("-m", "evals.evaluate", *argv, check=False)
    assert process.returncode == 2 and "unknown benchmark 'humaneva'" in process.stderr


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
