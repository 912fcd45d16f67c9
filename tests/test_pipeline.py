"""The whole filtering chain (data_prep.pipeline): sources -> exact dedup -> near dedup -> LLM annotation ->
classifier -> filter -> decontamination -> shards, through datatrove's LocalPipelineExecutor with 2 tasks
(and SlurmPipelineExecutor: the job scripts here, a real cluster under `make test-slurm`)."""

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import dill
import pytest
from filtering_corpus import (
    RENAMED_HUMANEVAL_0,
    humaneval_0,
    near_copy,
    rating_reply,
    read_task_files,
    stdlib_functions,
)
from openai_server import OpenAIServer

from data_prep.pipeline import main
from data_prep.sources import document_id

SECRET = "sk-test-do-not-leak-0123456789"


def write_corpus(folder: Path) -> Path:
    """100 stdlib functions, an exact copy (CRLF line ends), a near copy and two planted HumanEval/0s."""
    folder.mkdir(parents=True)
    functions = stdlib_functions(100)
    for i, text in enumerate(functions):
        (folder / f"f{i:03d}.py").write_text(text)
    (folder / "copy.py").write_bytes(functions[10].replace("\n", "\r\n").encode())
    (folder / "near.py").write_text(near_copy(max(functions, key=len)))
    (folder / "humaneval_0.py").write_text(humaneval_0())
    (folder / "renamed.py").write_text(RENAMED_HUMANEVAL_0)
    return folder


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_corpus(tmp_path / "corpus")


def chain_args(work: Path, corpus: Path, url: str, tokenizer: Path, *extra: str) -> list[str]:
    return [
        "--out",
        str(work),
        "--input",
        str(corpus),
        "--n-annotate",
        "60",
        "--model",
        "gpt-4o-mini",
        "--base-url",
        url,
        "--timeout",
        "5",
        "--no-progress",
        "--tokenizer",
        str(tokenizer),
        "--tasks",
        "2",
        *extra,
    ]


def check_chain(work: Path, corpus: Path, server: OpenAIServer) -> None:
    """What the chain must have made, whichever executor ran it."""
    stages = {
        (entry["stage"], entry["step"].split(": ", 1)[1]): entry["stats"]
        for entry in json.loads((work / "report.json").read_text())
    }
    assert stages[("exact-dedup", "💥 exact-deduplication stage 3")]["dropped"] >= 1  # the CRLF copy
    assert stages[("minhash-dedup", "🎯 MinHash stage 4")]["dropped"] >= 1  # the near copy
    filtered = stages[("quality-filter", "🎓 educational value")]
    decontaminated = stages[("decontaminate", "🧪 benchmark decontamination")]
    assert filtered["forwarded"] >= 10 and filtered["dropped"] >= 10  # the classifier keeps some and drops some
    assert decontaminated["total"] == filtered["forwarded"] and decontaminated["dropped"] == 2

    texts = {path.name: path.read_text(encoding="utf-8") for path in corpus.glob("*.py")}
    clean = read_task_files(work / "clean")
    clean_ids = [doc["id"] for doc in clean]
    assert len(clean_ids) == len(set(clean_ids)) == decontaminated["forwarded"]
    for planted in ("humaneval_0.py", "renamed.py"):
        assert document_id(texts[planted]) not in clean_ids
    threshold = json.loads((work / "classifier" / "classifier.json").read_text())["threshold"]
    assert all(doc["metadata"]["quality_score"] >= threshold for doc in clean)
    assert all(doc["metadata"]["path"].endswith(".py") and doc["metadata"]["source"] == "local" for doc in clean)

    report = json.loads((work / "decontamination" / "report.json").read_text())
    matches = report["problems"]["HumanEval/0"]["matches"]
    verbatim, renamed = document_id(texts["humaneval_0.py"]), document_id(texts["renamed.py"])
    assert {(m["id"], m["test"]) for m in matches} >= {(verbatim, "ngram"), (verbatim, "ast"), (renamed, "ast")}
    assert not any(m["id"] == renamed and m["test"] == "ngram" for m in matches)  # its docstring was rewritten

    labels = [json.loads(line) for line in open(work / "annotation" / "labels.jsonl")]
    assert len(labels) == 60 and len({label["id"] for label in labels}) == 60
    assert {label["prompt_version"] for label in labels} == {"edu-rubric-v1"} and {1, 4} <= {
        label["score"] for label in labels
    }
    assert any(request["fault"] for request in server.chat_requests)  # faults were met and retried through

    manifest = json.loads((work / "shards" / "manifest.json").read_text())
    assert manifest["num_documents"] == len(clean)
    for path in work.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_whole_chain_on_local_executor_with_two_tasks(tmp_path, corpus, code_tokenizer, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    work = tmp_path / "work"
    with OpenAIServer(reply=rating_reply) as server:
        server.inject("429", "500", "not-json", "length")
        assert main(chain_args(work, corpus, server.url, code_tokenizer, "--workers", "2")) == 0
        check_chain(work, corpus, server)

        requests, clean = len(server.chat_requests), read_task_files(work / "clean")
        assert main(chain_args(work, corpus, server.url, code_tokenizer, "--workers", "2")) == 0  # resumes: all done
        assert len(server.chat_requests) == requests and read_task_files(work / "clean") == clean
        assert main(chain_args(work, corpus, server.url, code_tokenizer, "--n-annotate", "61")) == 2  # other job


FAKE_SBATCH = """#!/bin/sh
# Records what datatrove submits: the script, the arguments; answers like sbatch.
n=$(($(cat "$SBATCH_RECORD/count" 2>/dev/null || echo 0) + 1))
echo $n > "$SBATCH_RECORD/count"
for last; do :; done
cp "$last" "$SBATCH_RECORD/$n.sh"
echo "$@" > "$SBATCH_RECORD/$n.args"
echo "Submitted batch job $((1000 + n))"
"""


def test_slurm_executor_submits_the_chain_as_dependent_job_arrays(tmp_path, corpus, code_tokenizer, monkeypatch):
    """Without a cluster: the real SlurmPipelineExecutor launch, with `sbatch` standing in to record the scripts."""
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch"
    bin_dir.mkdir()
    record.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_RECORD", str(record))
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("HF_TOKEN", SECRET)  # --stack is gated: the token must be there, and stay out of files
    work = tmp_path / "work"
    args = chain_args(
        work,
        corpus,
        "http://127.0.0.1:9/v1",
        code_tokenizer,
        "--stack",
        "--executor",
        "slurm",
        "--slurm-partition",
        "debug",
        "--workers",
        "8",
    )
    assert main(args) == 0

    submitted = sorted(record.glob("*.sh"), key=lambda path: int(path.stem))
    stage_scripts = {}
    for script in submitted:
        text = script.read_text()
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
        assert "#SBATCH --partition=debug" in text and f"source {Path(sys.prefix) / 'bin' / 'activate'}" in text
        if "launch_pickled_pipeline" in text:
            stage_scripts[text.split("#SBATCH --job-name=phi1-data-", 1)[1].split("\n", 1)[0]] = script
    names = list(stage_scripts)
    assert names[:3] == ["read", "exact-duplicates", "exact-dedup"] and names[-1] == "report"
    assert {"minhash-buckets", "annotate", "classifier", "quality-filter", "decontaminate", "shards"} <= set(names)
    assert "#SBATCH --array=0-1%8" in stage_scripts["read"].read_text()
    assert "#SBATCH --array=0-24%8" in stage_scripts["minhash-buckets"].read_text()  # one task per LSH band
    assert "#SBATCH --array=0-0%8" in stage_scripts["classifier"].read_text()
    for before, after in zip(names, names[1:], strict=False):  # each stage waits for the one before to succeed
        job = 1000 + int(stage_scripts[before].stem)
        assert f"--dependency=afterok:{job}" in (record / f"{stage_scripts[after].stem}.args").read_text()

    with open(work / "logs" / "quality-filter" / "executor.pik", "rb") as file:
        executor = dill.load(file)  # what each SLURM task loads
    assert [type(step).__name__ for step in executor.pipeline] == ["TaskOutputReader", "QualityFilter", "TaskWriter"]
    for path in work.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def slurm_partition() -> str | None:
    """The default partition of a SLURM cluster that answers, or None."""
    if shutil.which("sinfo") is None:
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return None
    partitions = out.stdout.split()
    if out.returncode != 0 or not partitions:
        return None
    return next((name.rstrip("*") for name in partitions if name.endswith("*")), partitions[0])


@pytest.mark.slurm
def test_whole_chain_on_slurm(tmp_path_factory, code_tokenizer, monkeypatch):
    partition = slurm_partition()
    if partition is None:
        pytest.skip("no SLURM cluster answers `sinfo` (make test-slurm starts one)")
    base = tmp_path_factory.mktemp("slurm")  # one node: the jobs see this machine's files
    corpus_folder = write_corpus(base / "corpus")
    tokenizer = base / "tokenizer.json"
    shutil.copy(code_tokenizer, tokenizer)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    work = base / "work"
    with OpenAIServer(reply=rating_reply) as server:
        server.inject("429", "not-json")
        args = chain_args(
            work,
            corpus_folder,
            server.url,
            tokenizer,
            "--executor",
            "slurm",
            "--slurm-partition",
            partition,
            "--slurm-time",
            "00:20:00",
        )
        assert main(args) == 0
        deadline = time.monotonic() + 900
        while not (work / "report.json").exists():
            failed = [
                path for path in (work / "logs").rglob("*.out") if "Traceback" in path.read_text(errors="replace")
            ]
            assert not failed, failed[0].read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the SLURM chain did not finish in 15 minutes"
            time.sleep(5)
        check_chain(work, corpus_folder, server)
