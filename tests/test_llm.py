"""data_prep.llm: the real `openai` client against the local fault-injecting server (tests/openai_server.py)."""

import json
import os
import time
from email.utils import formatdate
from pathlib import Path

import pytest
from openai_server import Reply

from data_prep.llm import (
    Engine,
    EngineError,
    EngineSettings,
    Price,
    Request,
    load_prices,
    price_for,
    read_records,
    retry_after_seconds,
)

KEY = "sk-test-4b1d-very-secret-key"
UNIT_PRICES = {"test-model": Price(input=1e6, cached_input=0.5e6, output=2e6)}  # $1, $0.50, $2 per token


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def requests(count: int, prefix: str = "question", max_tokens: int = 20) -> list[Request]:
    return [
        Request.make(
            {
                "model": "test-model",
                "messages": [{"role": "user", "content": f"{prefix} {index}"}],
                "max_tokens": max_tokens,
            },
            template="test-v1",
            seed=index,
        )
        for index in range(count)
    ]


def engine(folder: Path, server, **settings) -> Engine:
    defaults = dict(base_url=server.url, concurrency=4, timeout=1.0, backoff_base=0.01, prices=UNIT_PRICES)
    return Engine(folder, EngineSettings(**{**defaults, "progress": False, **settings}))


def run(folder: Path, server, batch: list[Request], check=None, **settings):
    """The summary of one engine run over `batch`, the folder released afterwards (as when a process ends)."""
    with engine(folder, server, **settings) as instance:
        return instance.run(batch, total=len(batch), check=check)


def ledger_answer(folder: Path, server, request_id: str):
    with engine(folder, server) as instance:
        return instance.ledger.answers([request_id])[request_id]


def answered_ids(folder: Path) -> list[str]:
    return [record["id"] for record in read_records(folder / "responses.jsonl")]


def test_request_id_hashes_body_template_and_seed():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 1.0}
    same = Request.make(dict(body), "v1", 3)
    assert same.id == Request.make(body, "v1", 3).id
    changed = [
        Request.make({**body, "temperature": 0.5}, "v1", 3),
        Request.make({**body, "model": "n"}, "v1", 3),
        Request.make({**body, "messages": [{"role": "user", "content": "hi!"}]}, "v1", 3),
        Request.make(body, "v2", 3),
        Request.make(body, "v1", 4),
    ]
    assert len({same.id, *(request.id for request in changed)}) == 6


@pytest.mark.parametrize("fault", ["429", "500", "hang", "not-json"])
def test_a_transient_fault_is_retried_and_the_answer_recorded_once(tmp_path, openai_server, fault):
    openai_server.hang_seconds = 2.0  # past the 0.5 s timeout
    openai_server.inject(fault)
    openai_server.retry_after = 0.05
    summary = run(tmp_path, openai_server, requests(1), timeout=0.5)
    assert (summary.answered, summary.failed, summary.retries) == (1, 0, 1)
    assert [request["fault"] for request in openai_server.chat_requests] == [fault, None]
    assert len(answered_ids(tmp_path)) == 1
    assert not list(read_records(tmp_path / "errors.jsonl"))


def test_a_request_that_keeps_failing_is_given_up_and_reported(tmp_path, openai_server):
    openai_server.inject("500", "500", "500", match="question 1")
    summary = run(tmp_path, openai_server, requests(3), max_attempts=3)
    assert (summary.answered, summary.failed) == (2, 1)
    errors = [record for record in read_records(tmp_path / "errors.jsonl")]
    assert len(errors) == 1 and errors[0]["final"] and "HTTP 500" in errors[0]["error"]
    assert errors[0]["id"] == requests(3)[1].id
    # a rerun tries the failed request again and pays for nothing twice
    summary = run(tmp_path, openai_server, requests(3))
    assert (summary.skipped, summary.answered) == (2, 1)
    assert len(openai_server.chat_requests) == 2 + 3 + 1  # two answers, three failed sends, one rerun


def test_retry_after_is_honoured_and_pauses_every_request(tmp_path, openai_server):
    openai_server.latency, openai_server.retry_after = 0.1, 0.8
    openai_server.inject("429")
    run(tmp_path, openai_server, requests(16), concurrency=4)
    arrivals = openai_server.chat_requests
    limited = next(request for request in arrivals if request["fault"] == "429")
    told_at = limited["time"] + openai_server.latency  # when the client got the 429
    retry = [
        request
        for request in arrivals
        if request["headers"]["x-client-request-id"] == limited["headers"]["x-client-request-id"]
    ][1]
    assert retry["time"] >= told_at + openai_server.retry_after
    # requests already on their way may arrive just after the 429 was sent; then nothing until the pause ends
    window = (told_at + 0.2, told_at + openai_server.retry_after)
    assert not [request for request in arrivals if window[0] < request["time"] < window[1]]
    assert len(answered_ids(tmp_path)) == 16


def test_retry_after_header_forms():
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert 8 <= retry_after_seconds({"retry-after": formatdate(time.time() + 10, usegmt=True)}) <= 10
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": "86400"}) == 600.0


def test_cut_and_filtered_answers_are_never_data(tmp_path, openai_server):
    openai_server.inject("length", "content_filter", "length", match="question 0")  # every attempt of request 0
    openai_server.inject("length", match="question 1")  # only the first of request 1
    summary = run(tmp_path, openai_server, requests(3), max_cut_attempts=3)
    assert (summary.answered, summary.failed) == (2, 1)
    ids = [request.id for request in requests(3)]
    assert sorted(answered_ids(tmp_path)) == sorted(ids[1:])
    errors = [record for record in read_records(tmp_path / "errors.jsonl")]
    assert [(record["id"], record["final"]) for record in errors if record["id"] == ids[0]] == [(ids[0], False)] * 3 + [
        (ids[0], True)
    ]
    assert [record["error"] for record in errors if record["id"] == ids[1]] == [
        "cut at max_tokens (finish_reason length)"
    ]
    answer = ledger_answer(tmp_path, openai_server, ids[1])
    assert answer.finish_reason == "stop" and answer.content == "An answer to: question 1"
    # the cut answers were paid for: the ledger's spend counts them
    paid = [record["cost_usd"] for record in errors if not record["final"]]
    assert len(paid) == 4 and all(cost > 0 for cost in paid)
    answers = sum(record["cost_usd"] for record in read_records(tmp_path / "responses.jsonl"))
    with engine(tmp_path, openai_server) as instance:
        assert instance.ledger.spent == pytest.approx(answers + sum(paid))


def test_a_check_that_refuses_an_answer_makes_it_a_paid_retry(tmp_path, openai_server):
    replies = iter(["no grade here", "Score: 7"])
    openai_server.reply = lambda body: next(replies)
    summary = run(
        tmp_path, openai_server, requests(1), check=lambda content: None if "Score:" in content else "no score"
    )
    assert (summary.answered, summary.retries) == (1, 1)
    assert ledger_answer(tmp_path, openai_server, requests(1)[0].id).content == "Score: 7"


def test_cost_counts_prompt_cached_and_completion_tokens(tmp_path, openai_server):
    openai_server.reply = lambda body: Reply("x", prompt_tokens=10, completion_tokens=3, cached_tokens=4)
    summary = run(tmp_path, openai_server, requests(2))
    # per answer: 6 uncached prompt tokens at $1, 4 cached at $0.50, 3 completion tokens at $2
    assert summary.cost_usd == pytest.approx(2 * (6 + 2 + 6))
    assert (summary.prompt_tokens, summary.cached_tokens, summary.completion_tokens) == (20, 8, 6)
    assert [record["cost_usd"] for record in read_records(tmp_path / "responses.jsonl")] == [14.0, 14.0]


def test_budget_cap_stops_cleanly_and_a_rerun_with_more_budget_finishes(tmp_path, openai_server):
    openai_server.reply = lambda body: Reply("x", prompt_tokens=5, completion_tokens=5)  # $15 an answer
    batch = requests(12)
    summary = run(tmp_path, openai_server, batch)
    spent_before = summary.total_cost_usd
    assert summary.stopped is None and spent_before == 12 * 15
    summary = run(tmp_path / "capped", openai_server, batch, max_cost_usd=100.0)
    assert summary.stopped == "budget"
    assert summary.total_cost_usd <= 100.0 and 0 < summary.answered < 12
    sent = len(openai_server.chat_requests)
    summary = run(tmp_path / "capped", openai_server, batch, max_cost_usd=1000.0)
    assert summary.stopped is None and summary.answered + summary.skipped == 12
    assert len(openai_server.chat_requests) - sent == summary.answered  # nothing asked twice
    assert sorted(answered_ids(tmp_path / "capped")) == sorted(request.id for request in batch)


def test_requests_that_fit_only_after_others_settle_wait_instead_of_stopping(tmp_path, openai_server):
    openai_server.reply = lambda body: Reply("x", prompt_tokens=5, completion_tokens=5)  # $15, worst case $58
    summary = run(tmp_path, openai_server, requests(3), concurrency=4, max_cost_usd=100.0)
    assert summary.stopped is None and summary.answered == 3 and summary.total_cost_usd == 45.0


def test_batch_backend_keeps_to_the_cap_too(tmp_path, openai_server):
    openai_server.reply = lambda body: Reply("x", prompt_tokens=5, completion_tokens=5)  # $7.50 at batch price
    batch = requests(12)
    settings = dict(backend="batch", poll_interval=0.01, batch_size=3, concurrency=2)
    summary = run(tmp_path, openai_server, batch, max_cost_usd=60.0, **settings)
    assert summary.stopped == "budget" and summary.total_cost_usd <= 60.0 and 0 < summary.answered < 12
    summary = run(tmp_path, openai_server, batch, max_cost_usd=1000.0, **settings)
    assert summary.stopped is None and sorted(answered_ids(tmp_path)) == sorted(request.id for request in batch)
    submitted = [
        json.loads(line)["custom_id"]
        for batch_run in openai_server.batches.values()
        for line in openai_server.files[batch_run["input_file_id"]]["content"].splitlines()
    ]
    assert sorted(submitted) == sorted(request.id for request in batch)  # none submitted twice


def test_an_unpriced_model_under_a_cap_is_an_error(tmp_path, openai_server):
    with pytest.raises(EngineError, match="no price"):
        run(tmp_path, openai_server, requests(1), max_cost_usd=1.0, prices={})
    assert not openai_server.chat_requests


def test_a_torn_last_line_is_tolerated_and_its_request_asked_again(tmp_path, openai_server):
    batch = requests(5)
    run(tmp_path, openai_server, batch[:3])
    responses = tmp_path / "responses.jsonl"
    responses.write_bytes(responses.read_bytes()[:-40])  # a kill in the middle of the third line
    summary = run(tmp_path, openai_server, batch)
    assert (summary.skipped, summary.answered) == (2, 3)
    lines = responses.read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(line) for line in lines)
    assert sorted(answered_ids(tmp_path)) == sorted(request.id for request in batch)


def test_a_refused_key_stops_the_run_and_the_key_is_written_nowhere(tmp_path, openai_server, capfd):
    openai_server.inject("401")  # the server echoes the Authorization header in its message
    with pytest.raises(EngineError) as raised:
        run(tmp_path, openai_server, requests(3), concurrency=1)
    assert openai_server.chat_requests[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert KEY not in str(raised.value) and "[redacted]" in str(raised.value)
    openai_server.inject("500", "length")
    run(tmp_path, openai_server, requests(3), max_attempts=1)
    out, err = capfd.readouterr()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(errors="replace"), path
    assert KEY not in out + err


@pytest.mark.parametrize("limit", [{"requests_per_minute": 600}, {"tokens_per_minute": 600 * 24.5}])
def test_rate_limits_spread_requests_over_time(tmp_path, openai_server, limit):
    # 600 a minute is one every 0.1 s; a request counts 18 prompt bytes / 4 + max_tokens 20 = 24.5 tokens
    start = time.monotonic()
    run(tmp_path, openai_server, requests(5), concurrency=4, **limit)
    assert time.monotonic() - start >= 4 * 0.1  # the fifth cannot leave before four intervals have passed
    assert len(openai_server.chat_requests) == 5


def test_batch_backend_answers_at_half_price_and_resubmits_only_missing_ids(tmp_path, openai_server):
    openai_server.reply = lambda body: Reply("x", prompt_tokens=5, completion_tokens=5)
    openai_server.inject("content_filter", match="question 2")
    openai_server.inject("500", match="question 4")
    batch = requests(6)
    summary = run(tmp_path, openai_server, batch, backend="batch", poll_interval=0.01)
    assert (summary.answered, summary.failed) == (6, 0)
    first, second = sorted(openai_server.batches.values(), key=lambda b: int(b["id"].split("-")[1]))
    resubmitted = [
        json.loads(line)["custom_id"] for line in openai_server.files[second["input_file_id"]]["content"].splitlines()
    ]
    assert sorted(resubmitted) == sorted([batch[2].id, batch[4].id])
    assert [record["cost_usd"] for record in read_records(tmp_path / "responses.jsonl")] == [7.5] * 6
    events = [record["event"] for record in read_records(tmp_path / "batches.jsonl")]
    assert events == ["uploaded", "created", "collected"] * 2


def test_batch_restart_finds_a_batch_whose_creation_was_not_recorded(tmp_path, openai_server):
    batch = requests(3)
    run(tmp_path, openai_server, batch[:1], backend="batch", poll_interval=0.01)
    # simulate a kill between batches.create and its manifest line: upload and create by hand, record the upload
    lines = "".join(
        json.dumps({"custom_id": r.id, "method": "POST", "url": "/v1/chat/completions", "body": r.body}) + "\n"
        for r in batch[1:]
    )
    file_id = openai_server.add_file("requests.jsonl", "batch", lines.encode())
    import openai

    openai.OpenAI(base_url=openai_server.url, api_key=KEY).batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    with open(tmp_path / "batches.jsonl", "a") as manifest:
        manifest.write(json.dumps({"event": "uploaded", "file_id": file_id, "requests": 2, "time": time.time()}) + "\n")
    summary = run(tmp_path, openai_server, batch, backend="batch", poll_interval=0.01)
    assert len(openai_server.batches) == 2  # polled, not created again
    assert summary.skipped == 3 and summary.answered == 0
    assert sorted(answered_ids(tmp_path)) == sorted(request.id for request in batch)


def test_price_table_overrides_and_prefix_lookup(tmp_path):
    extra = tmp_path / "prices.yaml"
    extra.write_text("my-local-model: {input: 0, output: 0}\ngpt-4o-mini: {input: 1, cached_input: 0.5, output: 2}\n")
    prices = load_prices(extra)
    assert prices["my-local-model"] == Price(0.0, 0.0, 0.0)
    assert price_for("gpt-4o-mini-2024-07-18", prices) == Price(1.0, 0.5, 2.0)
    assert price_for("gpt-4o-2024-08-06", prices) == load_prices()["gpt-4o"]
    assert price_for("gpt-4-0613", prices) == load_prices()["gpt-4"]
    assert price_for("llama-3", prices) is None
    for other_model in ("gpt-4.5-preview", "gpt-3.5-turbo-16k", "gpt-4o-mini-tts", "gpt-4-1106-preview"):
        assert price_for(other_model, prices) is None  # not a snapshot of a listed model: its price is unknown
    extra.write_text("broken: {input: 1}\n")
    with pytest.raises(ValueError, match="broken"):
        load_prices(extra)


def test_no_key_and_no_local_server_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(EngineError, match="OPENAI_API_KEY"):
        with Engine(tmp_path, EngineSettings(progress=False)) as instance:
            instance.run(requests(1))
    assert os.environ.get("OPENAI_API_KEY") is None


@pytest.mark.parametrize("backend", ["online", "batch"])
def test_a_request_given_twice_in_one_run_is_sent_once(tmp_path, openai_server, backend):
    batch = requests(3)
    summary = run(
        tmp_path, openai_server, [batch[0], batch[0], *batch[1:], batch[1]], backend=backend, poll_interval=0.01
    )
    assert (summary.requested, summary.skipped, summary.answered) == (5, 2, 3)
    sent = [request["body"] for request in openai_server.chat_requests] + [
        json.loads(line)["custom_id"]
        for batch_run in openai_server.batches.values()
        for line in openai_server.files[batch_run["input_file_id"]]["content"].splitlines()
    ]
    assert len(sent) == 3  # a Batch API file with a custom_id twice would be refused
    assert sorted(answered_ids(tmp_path)) == sorted(request.id for request in batch)
