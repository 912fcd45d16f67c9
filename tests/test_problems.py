"""The benchmarks: their prompts and stops, their reference solutions passing in the sandbox, and bad input."""

import gzip
import json
import re
from pathlib import Path

import pytest

from evals.evaluate import evaluate
from evals.problems import (
    HUMANEVAL_STOP,
    MBPP_THREE_SHOT_STOP,
    MBPP_ZERO_SHOT_STOP,
    InputFileError,
    load_problems,
)
from evals.sandbox import Sandbox
from evals.time_limits import calibrate
from phi1.errors import ConfigError

BUNDLED_MBPP = Path(__file__).resolve().parents[1] / "evals" / "data" / "mbpp" / "test.jsonl"
SHARED_MBPP = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "mbpp" / "test.jsonl"

# The references are the datasets' own code, so they may run without isolation where none is available.
REFERENCE_SANDBOX = dict(allow_unsafe=True)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_humaneval_has_164_problems_with_raw_prompts_and_the_usual_stops():
    problems = load_problems("humaneval")
    assert len(problems) == 164
    first = problems[0]
    assert first.task_id == "HumanEval/0" and first.entry_point == "has_close_elements"
    assert first.prompt.startswith("from typing import List\n") and first.prompt.endswith('    """\n')  # unstripped
    assert first.stop == HUMANEVAL_STOP
    assert first.program("    pass") == first.prompt + "    pass\n" + first.test + "\n"
    assert first.test.endswith("\ncheck(has_close_elements)")


def grade_references(benchmark: str, cache_dir: Path) -> tuple[dict, dict]:
    """Each reference solution graded as a sample, with the time limits calibrated (afresh) from the references:
    (failures by task_id, summary)."""
    problems = load_problems(benchmark)
    sandbox = Sandbox(**REFERENCE_SANDBOX)
    limits = calibrate(problems, sandbox, progress=False, cache_dir=cache_dir)
    assert len(limits.reference_seconds) == len(problems)  # every reference measured: it passed once
    samples = [{"task_id": p.task_id, "completion": p.reference} for p in problems]
    rows, summary = evaluate(problems, samples, sandbox, progress=False, limits=limits)
    return {row["task_id"]: row["result"] for row in rows if not row["passed"]}, summary


@pytest.mark.slow
def test_every_humaneval_canonical_solution_passes_within_its_calibrated_limit(tmp_path):
    failures, summary = grade_references("humaneval", tmp_path)
    assert not failures and summary["passed"] == 164
    assert 3.0 <= summary["time_limits"]["min"] and summary["time_limits"]["max"] < 4.0  # all references are quick


def test_mbpp_zero_shot_prompt_is_the_docstring_with_the_first_assert():
    problems = load_problems("mbpp")
    assert [p.task_id for p in problems] == list(range(11, 511))
    first = problems[0]
    assert first.prompt == (
        '"""\nWrite a python function to remove first and last occurrence of a given character from the string.\n'
        'assert remove_Occ("hello","l") == "heo"\n"""\n'
    )
    assert first.stop == MBPP_ZERO_SHOT_STOP


def test_mbpp_three_shot_prompt_follows_austin_et_al():
    first = load_problems("mbpp", mbpp_prompt="three-shot")[0]
    shot = (
        "You are an expert Python programmer, and here is your task: Write a function to find the similar elements "
        "from the given two tuple lists. Your code should pass these tests:\n\n"
        "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n"
        "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)\n"
        "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)\n"
        "[BEGIN]\ndef similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n"
        "  return (res) \n[DONE]\n\n"
    )
    assert first.prompt.startswith(shot)
    assert first.prompt.count("[BEGIN]") == 4 and first.prompt.count("[DONE]") == 3
    assert "def is_not_prime(n)" in first.prompt and "def heap_queue_largest(nums,n)" in first.prompt
    assert first.prompt.endswith(
        "from the string. Your code should pass these tests:\n\n"
        'assert remove_Occ("hello","l") == "heo"\nassert remove_Occ("abcda","a") == "bcd"\n'
        'assert remove_Occ("PHP","P") == "H"\n[BEGIN]\n'
    )
    assert first.stop == MBPP_THREE_SHOT_STOP


def test_mbpp_setup_code_runs_after_the_completion():
    task_367 = next(p for p in load_problems("mbpp") if p.task_id == 367)
    program = task_367.program(task_367.reference)
    assert program.index("class Node") < program.index("root = Node(1)")


@pytest.mark.slow
def test_every_mbpp_reference_solution_passes_within_its_calibrated_limit(tmp_path):
    failures, summary = grade_references("mbpp", tmp_path)
    assert not failures and summary["passed"] == 500
    assert summary["time_limits"]["max"] > 3.0 + 4.0 * 1.0  # task 123's reference takes seconds


def test_the_bundled_mbpp_is_the_published_test_split_with_its_licence():
    rows = [json.loads(line) for line in BUNDLED_MBPP.read_text().splitlines()]
    assert [row["task_id"] for row in rows] == list(range(11, 511))
    assert load_problems("mbpp") == load_problems("mbpp", BUNDLED_MBPP)  # the default reads the bundled copy
    folder = BUNDLED_MBPP.parent
    assert "Attribution 4.0 International" in (folder / "LICENSE").read_text()
    assert "Austin" in (folder / "README.md").read_text() and "CC BY 4.0" in (folder / "README.md").read_text()


@pytest.mark.skipif(not SHARED_MBPP.exists(), reason=f"{SHARED_MBPP} is missing (shared/ beside the repo)")
def test_the_bundled_mbpp_equals_the_shared_reference_copy():
    assert BUNDLED_MBPP.read_bytes() == SHARED_MBPP.read_bytes()


def test_mbpp_loads_offline_and_the_hub_source_is_an_explicit_choice(run_python, tmp_path):
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    bundled = "from evals.problems import load_problems; print(len(load_problems('mbpp')))"
    assert run_python("-c", bundled, env=offline).stdout.split() == ["500"]
    hub = "from evals.problems import load_problems; load_problems('mbpp', 'hub')"
    refused = run_python("-c", hub, env=offline, check=False)
    assert refused.returncode != 0 and "cannot load google-research-datasets/mbpp" in refused.stderr
    with pytest.raises(ConfigError, match="data='hub' reads MBPP"):
        load_problems("humaneval", "hub")


def test_mbpp_rows_outside_the_test_split_are_skipped(tmp_path):
    rows = [json.loads(line) for line in BUNDLED_MBPP.read_text().splitlines()[:2]]
    prompt_split_row = {**rows[0], "task_id": 2}
    problems = load_problems("mbpp", write_jsonl(tmp_path / "mixed.jsonl", [prompt_split_row, *rows]))
    assert [p.task_id for p in problems] == [11, 12]


def test_a_user_problem_file_works_like_humaneval(tmp_path):
    row = {"task_id": "mine/0", "prompt": "def double(x):\n", "test": "def check(f):\n    assert f(2) == 4\n"}
    row |= {"entry_point": "double", "canonical_solution": "    return 2 * x\n"}
    path = tmp_path / "mine.jsonl.gz"
    with gzip.open(path, "wt") as file:
        file.write(json.dumps(row) + "\n")
    (problem,) = load_problems(str(path))
    assert problem.stop == HUMANEVAL_STOP and problem.prompt == row["prompt"]
    programs = [problem.program(problem.reference), problem.program("    return x")]
    results = Sandbox(**REFERENCE_SANDBOX).run_many(programs, progress=False)
    assert [r.passed for r in results] == [True, False]
    assert load_problems("humaneval", path) == [problem]  # --data for a local copy of HumanEval


GOOD = {"task_id": "t/0", "prompt": "def f():\n", "test": "def check(f):\n    pass\n", "entry_point": "f"}


@pytest.mark.parametrize(
    "lines, message",
    [
        ([json.dumps(GOOD), "{not json"], r":2: malformed JSON"),
        ([json.dumps({k: v for k, v in GOOD.items() if k != "test"})], r":1: field 'test' is missing"),
        ([json.dumps({**GOOD, "prompt": 3})], r":1: field 'prompt' must be str, got int"),
        ([json.dumps(GOOD), json.dumps(GOOD)], r":2: field 'task_id': 't/0' appears twice"),
        (["[1, 2]"], r":1: expected a JSON object, got list"),
        ([""], r": no problems in the file"),
    ],
)
def test_bad_problem_files_are_reported_by_file_line_and_field(tmp_path, lines, message):
    path = write_jsonl(tmp_path / "problems.jsonl", lines)
    with pytest.raises(ConfigError, match=re.escape(str(path)) + message):
        load_problems(str(path))


def test_bad_arguments_are_reported_by_name(tmp_path):
    with pytest.raises(ConfigError, match="unknown benchmark 'humaneva'"):
        load_problems("humaneva")
    with pytest.raises(ConfigError, match="mbpp_prompt must be one of zero-shot, three-shot"):
        load_problems("mbpp", mbpp_prompt="five-shot")
    with pytest.raises(ConfigError, match="no such file"):
        load_problems("humaneval", tmp_path / "absent.jsonl")
    with pytest.raises(InputFileError, match="no task of MBPP's test split"):
        load_problems("mbpp", write_jsonl(tmp_path / "train.jsonl", [{"task_id": 700}]))
