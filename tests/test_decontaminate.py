"""data_prep.decontaminate: n-gram and AST-match tests against HumanEval and MBPP, the CLI and its report."""

import json
import sysconfig
from pathlib import Path

import pytest
from filtering_corpus import RENAMED_HUMANEVAL_0, humaneval_0

from data_prep.decontaminate import BenchmarkIndex, load_references, main

SHARED_MBPP = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "mbpp" / "test.jsonl"
SORT = '''def bubble(items):
    """Sort a list in place."""
    n = len(items)
    for i in range(n):
        for j in range(n - 1 - i):
            if items[j] > items[j + 1]:
                items[j], items[j + 1] = items[j + 1], items[j]
    return items
'''


def test_the_standard_library_is_not_flagged():
    """No false positive over 40 real modules (about a million characters of varied Python) at τ = 0.9."""
    index = BenchmarkIndex(load_references(["humaneval", "mbpp"], {}))
    modules = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:40]
    for module in modules:
        text = module.read_text(encoding="utf-8", errors="replace")
        assert not index.ast_matches(text, 0.9), module.name
        assert not index.ngram_matches(text), module.name


def test_planted_solutions_are_caught():
    references = load_references(["humaneval", "mbpp"], {})
    index = BenchmarkIndex(references)
    keys = [reference.key for reference in references]
    he0 = keys.index("HumanEval/0")
    assert index.ngram_matches(humaneval_0())[he0] >= 13  # the docstring's 13-grams
    assert index.ast_matches(humaneval_0(), 0.9)[he0] == 1.0
    assert he0 not in index.ngram_matches(RENAMED_HUMANEVAL_0)  # its docstring was rewritten ...
    assert index.ast_matches(RENAMED_HUMANEVAL_0, 0.9)[he0] > 0.9  # ... but not its syntax
    textbook = f"Here is a classic:\n\n```python\n{RENAMED_HUMANEVAL_0}```\nIt compares every pair."
    assert index.ast_matches(textbook, 0.9)[he0] > 0.9  # code inside prose is parsed from its fences
    assert len(index.too_small) < 100 and "HumanEval/53" in index.too_small  # def add(x, y): return x + y


@pytest.mark.skipif(not SHARED_MBPP.is_file(), reason="no shared MBPP copy")
def test_bundled_mbpp_is_the_published_test_split():
    bundled = load_references(["mbpp"], {})
    shared = load_references(["mbpp"], {"mbpp": str(SHARED_MBPP)})
    assert [(r.key, r.docstring, r.solution) for r in bundled] == [(r.key, r.docstring, r.solution) for r in shared]
    assert len(bundled) == 500


def write_records(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_cli_keeps_clean_records_whole_and_reports_each_match(tmp_path, capsys):
    from evals.problems import load_problems

    mbpp = next(problem for problem in load_problems("mbpp") if problem.task_id == 22)
    renamed_mbpp = mbpp.reference.replace("find_first_duplicate", "first_repeat").replace("num_set", "seen")
    records = [
        {"id": "clean", "text": SORT, "meta": {"rank": [1, 2]}, "score": 0.5},
        {"id": "verbatim", "text": humaneval_0(), "source": "copied"},
        {"id": "renamed", "text": RENAMED_HUMANEVAL_0},
        {"id": "mbpp", "prompt": "x", "text": renamed_mbpp.replace("nums", "values")},
        {"id": "clean-2", "text": "The loop runs over the list once.\n"},
    ]
    inputs = [write_records(tmp_path / "a.jsonl", records[:3]), write_records(tmp_path / "b.jsonl", records[3:])]
    out, report_path = tmp_path / "kept.jsonl", tmp_path / "report.json"
    args = [*map(str, inputs), "--out", str(out), "--report", str(report_path), "--tasks", "2", "--workers", "1"]
    assert main(args) == 0
    assert "2 of 5 records kept" in capsys.readouterr().out
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(kept, key=lambda r: r["id"]) == [records[0], records[4]]  # every field as it was

    report = json.loads(report_path.read_text())
    assert (report["records"], report["flagged"], report["kept"]) == (5, 3, 2)
    tests = {(m["id"], m["test"]) for key in report["problems"] for m in report["problems"][key]["matches"]}
    assert {("verbatim", "ngram"), ("verbatim", "ast"), ("renamed", "ast"), ("mbpp", "ast")} <= tests
    [renamed] = [m for m in report["problems"]["HumanEval/0"]["matches"] if m["id"] == "renamed"]
    assert renamed["where"] == f"{inputs[0]}:3" and 0.9 < renamed["score"] < 1
    assert report["problems"]["mbpp/22"]["matches"][0]["score"] == 1.0
    assert report["removed_at_tau"] == {"0.95": 3, "0.9": 3, "0.85": 3, "0.8": 3}
    assert report["settings"]["threshold"] == 0.9 and "HumanEval/53" in report["ast_not_tested"]

    assert main([*args[:-2], "--workers", "1"]) == 0  # a rerun finds the job done
    assert main([str(inputs[0]), "--out", str(out), "--report", str(tmp_path / "other.json")]) == 2  # not ours
    assert "holds a job with other settings" in capsys.readouterr().err


def test_an_exercise_is_checked_as_its_prompt_and_completion_together(tmp_path):
    """A CodeExercise holds the signature and docstring in `prompt` and the body in `completion`: a copied
    HumanEval solution is only whole, and only caught, when both are read."""
    solution = humaneval_0()
    cut = solution.index('"""', solution.index('"""') + 3) + 4  # after the docstring's closing quotes
    inputs = write_records(tmp_path / "in.jsonl", [{"prompt": solution[:cut], "completion": solution[cut:]}])
    reports = {}
    for field in ("completion", "prompt+completion"):
        out, report = tmp_path / f"{field}.jsonl", tmp_path / f"{field}.json"
        assert main([str(inputs), "--field", field, "--out", str(out), "--report", str(report), "--workers", "1"]) == 0
        reports[field] = json.loads(report.read_text())["flagged"]
    assert reports == {"completion": 0, "prompt+completion": 1}


def test_pruning_at_lower_tau_keeps_listing_the_weaker_matches(tmp_path):
    """A copy with more added is removed at τ = 0.85 but not at 0.9: the report shows both, for the paper's
    pruning experiment, while --threshold decides what is dropped."""
    longer = RENAMED_HUMANEVAL_0.replace("    count = 0\n", "    count = 0\n    total = 0\n    seen = []\n")
    inputs = write_records(tmp_path / "in.jsonl", [{"text": longer}])
    out, report_path = tmp_path / "kept.jsonl", tmp_path / "report.json"
    assert main([str(inputs), "--out", str(out), "--report", str(report_path), "--workers", "1"]) == 0
    report = json.loads(report_path.read_text())
    [match] = report["problems"]["HumanEval/0"]["matches"]
    assert 0.85 <= match["score"] < 0.9 and report["flagged"] == 0 and len(out.read_text().splitlines()) == 1
    assert report["removed_at_tau"] == {"0.95": 0, "0.9": 0, "0.85": 1, "0.8": 1}


def test_embedding_distance_is_an_optional_test(tmp_path):
    inputs = write_records(tmp_path / "in.jsonl", [{"text": humaneval_0()}, {"text": "print('hello')\n"}])
    out, report_path = tmp_path / "kept.jsonl", tmp_path / "report.json"
    args = [
        str(inputs),
        "--out",
        str(out),
        "--report",
        str(report_path),
        "--workers",
        "1",
        "--embedder",
        "hashed",
        "--max-distance",
        "0.5",
    ]
    assert main(args) == 0
    report = json.loads(report_path.read_text())
    [embedding] = [m for m in report["problems"]["HumanEval/0"]["matches"] if m["test"] == "embedding"]
    assert embedding["score"] < 0.5 and report["settings"]["embedder"]["kind"] == "hashed"


def test_bad_input_names_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "x = 1"}\n{"text": \n')
    assert (
        main([str(path), "--out", str(tmp_path / "k.jsonl"), "--report", str(tmp_path / "r.json"), "--workers", "1"])
        == 2
    )
    assert f"{path}:2: malformed JSON" in capsys.readouterr().err
    path.write_text('{"body": "x = 1"}\n')
    args = [str(path), "--out", str(tmp_path / "k2.jsonl"), "--report", str(tmp_path / "r2.json"), "--workers", "1"]
    assert main(args) == 2
    assert f"{path}:1: field 'text' missing" in capsys.readouterr().err
    assert main([str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "k3.jsonl"), "--report", "r.json"]) == 2
    args = [str(path), "--out", str(tmp_path / "k4.jsonl"), "--report", "r.json", "--max-distance", "0.5"]
    assert main([*args, "--embedder", "phi1"]) == 2  # no checkpoint named
    assert "needs --embedder-model CHECKPOINT" in capsys.readouterr().err
