"""data_prep.demo_corpus and its bundled samples: the samples are correct Python, and the demo builds
offline, with a loss mask on the exercises, and keeps what is complete when rerun."""

import contextlib
import doctest
import io
import json
import re
import tempfile

import numpy as np
import pytest

from data_prep.demo_corpus import DEMO_DATA, standard_library_files
from phi1.shards import open_loss_masks, open_shards, read_manifest
from phi1.tokenizer import load_tokenizer

CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def read_jsonl(name):
    with open(DEMO_DATA / name, encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def test_bundled_samples_are_modest():
    assert sum(path.stat().st_size for path in DEMO_DATA.glob("*.jsonl")) < 300_000
    assert 30 <= len(read_jsonl("textbooks.jsonl")) <= 60
    assert 100 <= len(read_jsonl("exercises.jsonl")) <= 200


@pytest.mark.parametrize("section", read_jsonl("textbooks.jsonl"), ids=lambda section: section["topic"])
def test_textbook_code_runs(section, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # sections that make files make them here
    monkeypatch.chdir(tmp_path)
    blocks = CODE_BLOCK.findall(section["text"])
    assert blocks, "a textbook section interleaves prose with code"
    namespace = {"__name__": "textbook"}
    with contextlib.redirect_stdout(io.StringIO()):
        for block in blocks:
            exec(compile(block, section["topic"], "exec"), namespace)


def test_exercises_complete_their_prompts_and_pass_their_examples():
    names = set()
    for record in read_jsonl("exercises.jsonl"):
        prompt, completion = record["prompt"], record["completion"]
        assert prompt.rstrip().endswith('"""') and completion.startswith("    "), prompt
        name = re.search(r"^def (\w+)\(", prompt, re.M).group(1)
        assert name not in names, f"{name} appears twice"
        names.add(name)
        namespace = {}
        exec(compile(prompt + completion, name, "exec"), namespace)
        test = doctest.DocTestParser().get_doctest(namespace[name].__doc__, namespace, name, name, 0)
        assert test.examples, f"{name} has no examples"
        runner = doctest.DocTestRunner()
        with contextlib.redirect_stdout(io.StringIO()) as report:
            runner.run(test)
        assert runner.failures == 0, report.getvalue()


def test_standard_library_sample_is_deterministic_and_capped():
    files = standard_library_files(500_000)
    assert files == standard_library_files(500_000) == sorted(files)
    assert 0 < sum(path.stat().st_size for path in files) <= 500_000
    assert not any(part in {"test", "tests", "site-packages"} for path in files for part in path.parts)


def test_demo_builds_offline_and_keeps_what_is_complete(tmp_path, run_python):
    out = tmp_path / "demo"
    args = ["-m", "data_prep.demo_corpus", "--out", str(out), "--vocab-size", "1000", "--max-mb", "0.5"]
    first = run_python(*args, env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    for line in ("code/", "textbooks/", "exercises/", "loss mask on completions"):
        assert line in first.stdout
    tokenizer = load_tokenizer(out / "tokenizer.json")
    manifests = {name: read_manifest(out / name) for name in ("code", "textbooks", "exercises")}
    assert {m["tokenizer"]["sha256"] for m in manifests.values()} == {manifests["code"]["tokenizer"]["sha256"]}
    assert manifests["exercises"]["loss_mask"] and not manifests["textbooks"]["loss_mask"]

    tokens = np.concatenate(open_shards(out / "textbooks"))
    eos = manifests["textbooks"]["eos_id"]
    first_document = tokens[: int(np.argmax(tokens == eos))].tolist()
    assert tokenizer.decode(first_document, skip_special_tokens=False) == read_jsonl("textbooks.jsonl")[0]["text"]
    mask = np.concatenate(open_loss_masks(out / "exercises"))
    assert 0 < mask.mean() < 1

    before = {path: path.stat().st_mtime_ns for path in out.rglob("*")}
    second = run_python(*args)
    assert second.stdout.count(": kept") == 4
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*")} == before
