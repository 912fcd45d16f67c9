"""data_prep.annotate: the stratified sample, the rubric prompt's strict answer format, and rating through the
LLM engine against the local fault-injecting OpenAI-compatible server."""

import json

import pytest
from datatrove.data import Document
from filtering_corpus import rating, rating_reply, stdlib_functions

from data_prep.annotate import (
    PROMPT_VERSION,
    allocate,
    annotation_stages,
    comment_share,
    main,
    parse_rating,
    stratum,
)
from data_prep.sources import local_readers
from data_prep.stages import ExecutionOptions, Stage, run_stages, task_writer

SECRET = "sk-annotate-secret-0123456789"


def test_strata_by_source_length_and_comments():
    bare = "x = 1\ny = 2\n"
    assert comment_share(bare) == 0
    explained = 'def f():\n    """Say what f does.\n\n    In detail.\n    """\n    # then do it\n    return 1\n'
    assert comment_share(explained) == pytest.approx(4 / 6)  # 3 docstring lines and a comment, of 6 non-blank
    assert stratum(Document(text=bare, id="a", metadata={"source": "the-stack"})) == "the-stack/short/bare"
    long_text = "\n".join(f"# step {i}\nvalue_{i} = compute(value_{i - 1})" for i in range(400))
    assert stratum(Document(text=long_text, id="b", metadata={})) == "local/long/explained"


def test_allocation_is_equal_and_passes_unused_shares_on():
    assert allocate({"a": 100, "b": 100, "c": 100}, 30) == {"a": 10, "b": 10, "c": 10}
    assert allocate({"a": 2, "b": 100, "c": 100}, 30) == {"a": 2, "b": 14, "c": 14}
    assert sum(allocate({"a": 7, "b": 5, "c": 100}, 31).values()) == 31
    assert allocate({"a": 3, "b": 4}, 100) == {"a": 3, "b": 4}


def test_parse_rating_accepts_only_the_asked_format():
    assert parse_rating('{"justification": "Clear loops.", "score": 3}') == (3, "Clear loops.")
    assert parse_rating('```json\n{"justification": "ok", "score": 0}\n```') == (0, "ok")
    for bad in [
        'Score: 4. {"justification": "x", "score": 4}',  # prose around it
        '{"justification": "x", "score": 6}',
        '{"justification": "x", "score": 4.5}',
        '{"justification": "x", "score": true}',
        '{"justification": "", "score": 2}',
        '{"justification": "x", "score": 2, "extra": 1}',
        '{"score": 2}',
        "4",
        "",
    ]:
        with pytest.raises(ValueError):
            parse_rating(bad)


def sample_ids(tmp_path, corpus, tasks: int) -> dict:
    """The chosen sample of `corpus` when the stages run with `tasks` tasks."""
    work = tmp_path / f"tasks{tasks}"
    stages = [Stage("read", [*local_readers([corpus], work), task_writer(work / "documents")])]
    stages += annotation_stages(work / "documents", work, 25, 7, "m", None, 100)[:3]  # the sample, no LLM
    run_stages(stages, ExecutionOptions(tasks=tasks, workers=1), work / "logs", work / "report.json")
    return json.loads((work / "sample" / "choice.json").read_text())


def test_the_sample_is_the_same_whatever_the_number_of_tasks(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, text in enumerate(stdlib_functions(80)):
        (corpus / f"f{i:02d}.py").write_text(text)
    one, three = sample_ids(tmp_path, corpus, 1), sample_ids(tmp_path, corpus, 3)
    assert one == three and len(one["ids"]) == 25
    sizes = {name: entry["documents"] for name, entry in one["strata"].items()}
    assert sum(sizes.values()) == 80 and len(sizes) >= 3
    shares = {name: entry["sampled"] for name, entry in one["strata"].items()}
    assert shares == allocate(sizes, 25)


def test_ratings_through_the_engine_with_faults_resume_and_no_guessing(tmp_path, openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    functions = stdlib_functions(30)
    for i, text in enumerate(functions):
        (corpus / f"f{i:02d}.py").write_text(text)
    stubborn = functions[5]  # the model never answers this one in the asked format
    asked = set()

    def reply(body):
        text = body["messages"][1]["content"]
        if stubborn[:200] in text:
            return f"I would give it a {rating(stubborn)}."
        if text not in asked:  # every other document: prose first, the right format when asked again
            asked.add(text)
            return "Looks educational to me!"
        return rating_reply(body)

    openai_server.reply = reply
    openai_server.inject("429", "500", "length")
    work = tmp_path / "work"
    args = [
        "--out",
        str(work),
        "--input",
        str(corpus),
        "--n-samples",
        "30",
        "--model",
        "gpt-4o-mini",
        "--base-url",
        openai_server.url,
        "--timeout",
        "5",
        "--no-progress",
        "--tasks",
        "2",
        "--workers",
        "1",
    ]
    assert main(args) == 0

    labels = [json.loads(line) for line in (work / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 29 and stubborn not in {label["text"] for label in labels}  # never guessed
    for label in labels:
        assert label["score"] == rating(label["text"]) and label["prompt_version"] == PROMPT_VERSION
        assert label["model"] == "gpt-4o-mini" and label["source"] == "local" and label["stratum"]
    errors = [json.loads(line) for line in (work / "llm" / "errors.jsonl").read_text().splitlines()]
    assert any("unusable rating" in error["error"] for error in errors)
    report = json.loads((work / "annotation_report.json").read_text())
    assert (report["sampled"], report["labelled"], report["failed"]) == (30, 29, 1)

    requests = len(openai_server.chat_requests)
    assert main(args) == 0  # a rerun asks only for what is missing: the stubborn document, a bounded number of times
    again = openai_server.chat_requests[requests:]
    assert 1 <= len(again) <= 3 and all(stubborn[:200] in r["body"]["messages"][1]["content"] for r in again)
    assert len((work / "labels.jsonl").read_text().splitlines()) == 29
    for path in work.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    user_prompt = openai_server.chat_requests[0]["body"]["messages"][1]["content"]
    assert "additive 5-point scoring system" in user_prompt and '"score": <integer from 0 to 5>' in user_prompt


def test_a_budget_stop_leaves_the_rating_stage_unfinished_so_a_rerun_carries_on(tmp_path, openai_server, monkeypatch):
    """As in data_prep.pipeline (the stage is not run again once finished): a stage stopped by the cost cap must
    not count as finished, or a rerun with a higher cap would train the classifier on the partial labels."""
    from data_prep.annotate import StoppedAtBudget
    from data_prep.llm import EngineSettings, Price

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    openai_server.reply = rating_reply
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, text in enumerate(stdlib_functions(12)):
        (corpus / f"f{i:02d}.py").write_text(text)
    work = tmp_path / "work"
    prices = {"m": Price(input=1.0, cached_input=1.0, output=1.0)}  # $ per million tokens

    def run(cap: float | None) -> None:
        engine = EngineSettings(base_url=openai_server.url, max_cost_usd=cap, prices=prices, progress=False)
        stages = [Stage("read", [*local_readers([corpus], work), task_writer(work / "documents")])]
        stages += annotation_stages(work / "documents", work, 12, 0, "m", engine, 6000)
        run_stages(stages, ExecutionOptions(workers=1), work / "logs", work / "report.json")

    with pytest.raises(StoppedAtBudget, match="rerun with a higher --max-cost-usd"):
        run(cap=0.004)  # a request's worst case is about $0.001 (its prompt bytes and max_tokens)
    labelled = len((work / "labels.jsonl").read_text().splitlines())
    assert 0 < labelled < 12
    run(cap=1.0)
    assert len((work / "labels.jsonl").read_text().splitlines()) == 12
    assert len(openai_server.chat_requests) == 12  # the rerun asked only for the missing ratings
