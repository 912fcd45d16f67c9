"""data_prep.textbooks (and the run of data_prep.synthetic it shares with exercises), against the local server."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from openai_server import message_text

from data_prep import textbooks
from data_prep.llm import read_records
from data_prep.synthetic import Sampling, sample_request
from data_prep.taxonomy import AUDIENCES, STYLES
from data_prep.textbooks import Textbooks, clean, passage_problem

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-test-textbooks-0f9e8d7c6b5a"
VOCABULARY = (
    "list loop index value tree graph node edge queue stack sort search key hash count sum window pointer slice "
    "string number digit prime grid path cost table memo state step trace input output bound case branch call "
    "return frame scope name object method class record field file line token word pair set map heap level order"
).split()


def passage(body: dict) -> str:
    """A textbook-like answer, different for every request: prose from a seeded draw of words around code."""
    rng = random.Random(message_text(body))

    def prose(words: int) -> str:
        return " ".join(rng.choice(VOCABULARY) for _ in range(words)) + "."

    code = f"def step(x):\n    return x + {rng.randint(1, 9)}\n\n\nprint(step(1))\n"
    return f"{prose(90)}\n\n```python\n{code}```\n\n{prose(110)}\n"


@pytest.fixture
def server(openai_server):
    openai_server.reply = passage
    return openai_server


@pytest.fixture
def env(server):
    return {**os.environ, "OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": KEY}


def arguments(out: Path, n: int, *extra: str) -> list[str]:
    return ["--model", "gpt-4o-mini", "--n-samples", str(n), "--out", str(out), "--no-progress", *extra]


def start(out: Path, n: int, extra: tuple[str, ...], env: dict) -> subprocess.Popen:
    """The CLI as a real subprocess, to be killed."""
    command = [sys.executable, "-m", "data_prep.textbooks", *arguments(out, n, *extra)]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(out: Path, n: int, *extra: str, monkeypatch, server) -> int:
    """The CLI in this process (fast); the kill tests use real subprocesses."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return textbooks.main(arguments(out, n, "--base-url", server.url, *extra))


def records(out: Path) -> list[dict]:
    return list(read_records(out / "textbooks.jsonl"))


def expected_ids(n: int, seed: int = 0) -> set[str]:
    sampling = Sampling("gpt-4o-mini", seed, 1.0, textbooks.MAX_TOKENS)
    return {sample_request(Textbooks(), sampling, index)[0].id for index in range(n)}


def assert_key_written_nowhere(out: Path, *texts: str) -> None:
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(errors="replace"), path
    for text in texts:
        assert KEY not in text


def kill_when(process: subprocess.Popen, server, requests_seen: int, rng: random.Random) -> None:
    """SIGKILL `process` at a random moment just after the server has received `requests_seen` requests."""
    deadline = time.monotonic() + 60
    while len(server.chat_requests) < requests_seen and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(rng.uniform(0, 0.03))
    process.send_signal(signal.SIGKILL)
    out, err = process.communicate()
    assert process.returncode == -signal.SIGKILL, f"the run ended before it was killed:\n{out}\n{err}"
    assert_key_written_nowhere(Path("/nonexistent"), out, err)


def test_killed_twice_at_random_moments_then_resumed_gives_exactly_n_records(tmp_path, server, env, monkeypatch):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    n, concurrency = 40, 4
    server.latency = 0.03
    extra = ("--concurrency", str(concurrency))
    first = rng.randint(1, 12)
    for requests_seen in (first, first + rng.randint(1, 12)):
        process = start(tmp_path, n, extra, env)
        kill_when(process, server, requests_seen, rng)
    assert run(tmp_path, n, *extra, monkeypatch=monkeypatch, server=server) == 0, f"seed {seed}"
    kept = records(tmp_path)
    assert len(kept) == n and {record["id"] for record in kept} == expected_ids(n), f"seed {seed}"
    assert sorted(record["index"] for record in kept) == list(range(n))
    assert not list(read_records(tmp_path / ".run" / "rejects.jsonl"))
    ledger = [record["id"] for record in read_records(tmp_path / ".run" / "responses.jsonl")]
    assert sorted(ledger) == sorted(expected_ids(n))  # every answer paid for once is kept once
    sent = Counter(request["headers"]["x-client-request-id"] for request in server.chat_requests)
    assert sum(sent.values()) - n <= 2 * concurrency, f"seed {seed}: more re-sent than was in flight at the kills"
    assert_key_written_nowhere(tmp_path)


def test_records_hold_clean_text_knobs_and_usage(tmp_path, server, monkeypatch, capsys):
    server.reply = lambda body: (
        "Sure! Here is a passage for you:\n\n" + passage(body) + "\n\nIn conclusion, we learned a lot. Happy coding!"
    )
    assert run(tmp_path, 3, "--seed", "7", monkeypatch=monkeypatch, server=server) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (summary["records"], summary["rejected"], summary["requested"]) == (3, 0, 3)
    for record in records(tmp_path):
        assert not record["text"].startswith("Sure") and "In conclusion" not in record["text"]
        assert record["raw_text"].startswith("Sure! Here is a passage")
        assert set(record["knobs"]) == {"area", "topic", "audience", "style", "domains", "length"}
        assert record["knobs"]["topic"] in message_text(
            next(r["body"] for r in server.chat_requests if r["headers"]["x-client-request-id"] == record["id"])
        )
        assert record["usage"]["completion_tokens"] > 0 and record["cost_usd"] > 0
        assert (record["model"], record["seed"], record["template"]) == ("gpt-4o-mini", 7, textbooks.TEMPLATE)


def test_passages_that_are_cut_broken_or_short_are_rejected_with_the_reason(tmp_path, server, monkeypatch):
    bad = iter(
        [
            "Some more prose. " * 60 + "\n```python\ndef broken(:\n    pass\n```\n",
            "Some more prose. " * 60 + "\n```python\nprint('the passage stops here",
            "Too short.\n```python\nprint(1)\n```\n",
            "Only prose and no code at all. " * 40,
        ]
    )
    server.reply = lambda body: next(bad, None) or passage(body)
    assert run(tmp_path, 6, "--concurrency", "1", monkeypatch=monkeypatch, server=server) == 0
    reasons = sorted(record["reason"] for record in read_records(tmp_path / ".run" / "rejects.jsonl"))
    assert len(reasons) == 4 and len(records(tmp_path)) == 2
    assert reasons[0].startswith("a code fence is not closed")
    assert reasons[1] == "no ```python code block"
    assert reasons[2].startswith("python block 1 does not parse")
    assert reasons[3].startswith("too short")


def test_a_cut_answer_is_asked_again_and_never_kept(tmp_path, server, monkeypatch):
    server.inject("length")
    assert run(tmp_path, 2, "--concurrency", "1", monkeypatch=monkeypatch, server=server) == 0
    assert len(records(tmp_path)) == 2 and len(server.chat_requests) == 3
    assert all(record["text"].rstrip().endswith(".") for record in records(tmp_path))


def test_near_duplicates_are_dropped_and_reported_across_resumed_runs(tmp_path, server, monkeypatch, capsys):
    server.reply = lambda body: passage({"messages": [{"content": "always the same"}]})
    assert run(tmp_path, 3, "--concurrency", "1", monkeypatch=monkeypatch, server=server) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.splitlines()[-1])
    assert (summary["records"], summary["near_duplicates"], summary["duplicate_rate"]) == (1, 2, round(2 / 3, 4))
    assert "diversity warning" in captured.err
    assert run(tmp_path, 5, monkeypatch=monkeypatch, server=server) == 0  # the index is rebuilt from the records
    assert len(records(tmp_path)) == 1
    rejects = list(read_records(tmp_path / ".run" / "rejects.jsonl"))
    assert len(rejects) == 4 and {record["stage"] for record in rejects} == {"near-duplicate"}
    assert all(record["reason"] == f"near-duplicate of {records(tmp_path)[0]['id']}" for record in rejects)


def test_a_larger_n_extends_the_set_and_asks_nothing_twice(tmp_path, server, monkeypatch):
    assert run(tmp_path, 5, monkeypatch=monkeypatch, server=server) == 0
    first = [record["id"] for record in records(tmp_path)]
    assert run(tmp_path, 8, monkeypatch=monkeypatch, server=server) == 0
    assert set(first) < {record["id"] for record in records(tmp_path)} == expected_ids(8)
    assert len(server.chat_requests) == 8
    assert run(tmp_path, 8, monkeypatch=monkeypatch, server=server) == 0
    assert len(server.chat_requests) == 8 and len(records(tmp_path)) == 8


def test_other_settings_in_the_same_folder_are_refused(tmp_path, server, monkeypatch, capsys):
    assert run(tmp_path, 2, monkeypatch=monkeypatch, server=server) == 0
    assert run(tmp_path, 2, "--temperature", "0.5", monkeypatch=monkeypatch, server=server) == 2
    assert "temperature=1.0" in capsys.readouterr().err
    assert len(server.chat_requests) == 2


def test_budget_stop_exits_3_and_a_higher_cap_finishes(tmp_path, server, monkeypatch, capsys):
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpt-4o-mini: {input: 100, output: 100}\n")  # an answer ~$0.04, its worst case ~$0.2
    n = 10
    capped = ("--prices", str(prices), "--concurrency", "2", "--max-tokens", "400")
    assert run(tmp_path / "out", n, *capped, "--max-cost-usd", "0.4", monkeypatch=monkeypatch, server=server) == 3
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["stopped"] == "budget" and summary["total_cost_usd"] <= 0.4 and 0 < summary["records"] < n
    assert run(tmp_path / "out", n, *capped, "--max-cost-usd", "10", monkeypatch=monkeypatch, server=server) == 0
    assert len(records(tmp_path / "out")) == n and len(server.chat_requests) == n


def test_batch_backend_killed_after_submitting_polls_on_restart(tmp_path, server, env, monkeypatch):
    server.hold_batches = True
    n = 6
    extra = ("--backend", "batch", "--poll-interval", "0.05")
    process = start(tmp_path, n, extra, env)
    deadline = time.monotonic() + 60
    while not any(batch["polls"] for batch in server.batches.values()) and time.monotonic() < deadline:
        time.sleep(0.01)
    process.kill()
    process.communicate()
    assert len(server.batches) == 1
    server.hold_batches = False
    assert run(tmp_path, n, *extra, monkeypatch=monkeypatch, server=server) == 0
    assert len(server.batches) == 1  # polled, not submitted again
    assert len([file for file in server.files.values() if file["purpose"] == "batch"]) == 1
    assert {record["id"] for record in records(tmp_path)} == expected_ids(n)
    assert_key_written_nowhere(tmp_path)


def test_audiences_and_styles_change_the_instructions_not_just_a_word():
    words = {name: set(text.lower().split()) for name, text in AUDIENCES.items()}
    for first in words:
        for second in words:
            if first < second:
                shared = len(words[first] & words[second]) / len(words[first] | words[second])
                assert shared < 0.3, (first, second, shared)
    knobs = [Textbooks().knobs(random.Random(index)) for index in range(400)]
    assert {knob["audience"] for knob in knobs} == set(AUDIENCES)
    assert {knob["style"] for knob in knobs} == set(STYLES)
    assert len({knob["topic"] for knob in knobs}) > 60
    assert all(len(set(knob["domains"])) == 2 for knob in knobs)


def test_cleanup_removes_stock_openings_and_closings_only():
    body = "Recursion solves a problem through smaller copies of itself.\n\n```python\nprint(1)\n```\n"
    assert clean("Certainly! Here's a section on recursion:\n\n" + body) == body
    assert clean("Welcome to the world of recursion! " + body) == body
    assert clean(body + "\n\nIn conclusion, recursion is useful. I hope this helps!") == body
    assert clean(body) == body
    assert clean("In this code, x grows.\n" + body).startswith("In this code")  # not a stock phrase
    assert passage_problem(clean(body)).startswith("too short")
