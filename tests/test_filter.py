"""data_prep.filter: the classifier over a corpus in datatrove tasks, kept and dropped documents with their
scores, resumption from the embedding cache."""

import json

import pytest
from filtering_corpus import rating, read_task_files, stdlib_functions, write_labels

from data_prep.classifier import main as train
from data_prep.filter import main
from data_prep.sources import document_id


def filter_args(classifier, work, corpus) -> list[str]:
    """The filter over the corpus in 2 tasks, one after the other."""
    tasks = ["--tasks", "2", "--workers", "1"]
    return ["--classifier", str(classifier), "--out", str(work), "--input", str(corpus), *tasks]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A classifier trained on 300 rated functions, and a corpus of 120 others as .py files."""
    root = tmp_path_factory.mktemp("filter")
    functions = stdlib_functions(420)
    labels = write_labels(root / "labels.jsonl", functions[:300])
    assert train([str(labels), "--out", str(root / "classifier"), "--embedder-dim", "256", "--trees", "50"]) == 0
    corpus = root / "corpus"
    corpus.mkdir()
    for i, text in enumerate(functions[300:]):
        (corpus / f"g{i:03d}.py").write_text(text)
    return root / "classifier", corpus, functions[300:]


def test_filter_keeps_what_the_classifier_rates_educational(tmp_path, setup, capsys):
    classifier, corpus, texts = setup
    work = tmp_path / "work"
    args = filter_args(classifier, work, corpus)
    assert main(args) == 0
    kept, dropped = read_task_files(work / "filtered"), read_task_files(work / "dropped")
    threshold = json.loads((classifier / "classifier.json").read_text())["threshold"]
    assert sorted(doc["id"] for doc in kept + dropped) == sorted(document_id(text) for text in texts)
    assert all(doc["metadata"]["quality_score"] >= threshold for doc in kept)
    assert all(doc["metadata"]["quality_score"] < threshold for doc in dropped)
    assert all(doc["metadata"]["path"].startswith(str(corpus)) for doc in kept)
    by_id = {document_id(text): rating(text) for text in texts}
    educational = [sum(by_id[doc["id"]] == 4 for doc in docs) / len(docs) for docs in (kept, dropped)]
    assert educational[0] > educational[1] + 0.15  # what the rater calls educational is kept more often

    [entry] = [e for e in json.loads((work / "report.json").read_text()) if "FILTER" in e["step"]]
    stats = entry["stats"]
    assert (stats["total"], stats["forwarded"], stats["dropped"]) == (120, len(kept), len(dropped))
    assert stats["doc_len"] == sum(len(doc["text"]) for doc in kept)  # characters kept
    assert "quality-filter" in capsys.readouterr().err


def test_an_interrupted_task_resumes_from_its_cached_embeddings(tmp_path, setup):
    classifier, corpus, _ = setup
    work = tmp_path / "work"
    args = filter_args(classifier, work, corpus)
    assert main(args) == 0
    kept = read_task_files(work / "filtered")
    [cache] = (work / "embeddings").iterdir()
    cached = sorted(cache.glob("task-*.npz"))
    assert [path.name for path in cached] == ["task-00000-00000.npz", "task-00001-00000.npz"]

    # task 1 "died" before it finished: no completion marker, its outputs half-written
    (work / "logs" / "quality-filter" / "completions" / "00001").unlink()
    (work / "filtered" / "00001.jsonl.gz").write_bytes(b"")
    assert main([*args, "--embed-batch-size", "4"]) == 0  # how it runs may change on a rerun, not what it makes
    assert read_task_files(work / "filtered") == kept
    assert sorted(cache.glob("task-*.npz")) == cached  # nothing embedded again: every vector was in the cache


def test_threshold_flag_overrides_the_classifier(tmp_path, setup):
    classifier, corpus, texts = setup
    work = tmp_path / "work"
    assert main(["--classifier", str(classifier), "--out", str(work), "--input", str(corpus), "--threshold", "0"]) == 0
    assert len(read_task_files(work / "filtered")) == len(texts) and not read_task_files(work / "dropped")


def test_missing_classifier_exits_2(tmp_path, setup, capsys):
    _, corpus, _ = setup
    assert main(["--classifier", str(tmp_path / "none"), "--out", str(tmp_path / "w"), "--input", str(corpus)]) == 2
    assert "no such classifier" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
