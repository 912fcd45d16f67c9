"""data_prep.classifier: a random forest on embeddings learns a real quality signal, reports precision,
recall, F1 and tokens kept per threshold, chooses the threshold, and refuses a foreign embedder."""

import json

import numpy as np
import pytest
from filtering_corpus import stdlib_functions, write_labels

from data_prep.classifier import (
    ClassifierError,
    budget_threshold,
    load_classifier,
    main,
    read_labels,
    threshold_metrics,
)
from data_prep.embed import EmbedderSpec


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    """600 stdlib functions rated 4 when a docstring explains them, else 1: about half and half."""
    return write_labels(tmp_path_factory.mktemp("labels") / "labels.jsonl", stdlib_functions(600))


def test_forest_beats_chance_clearly_and_reports_every_threshold(tmp_path, labels, capsys):
    out = tmp_path / "classifier"
    assert main([str(labels), "--out", str(out), "--embedder-dim", "512"]) == 0
    table = capsys.readouterr().out
    assert "random_forest" in table and "logistic_regression" in table and "ROC AUC" in table

    summary = json.loads((out / "classifier.json").read_text())
    metrics = summary["metrics"]
    assert metrics["held_out"] == 120 and 40 < metrics["held_out_positive"] < 80  # stratified 20%
    assert metrics["random_forest"]["roc_auc"] > 0.8  # chance is 0.5
    assert metrics["threshold"]["chosen_by"] == "best held-out F1"
    best_f1 = max(row["f1"] for row in metrics["random_forest"]["curve"])
    assert metrics["threshold"]["f1"] == pytest.approx(best_f1) and best_f1 > 0.75
    rows = metrics["random_forest"]["table"]
    assert [row["threshold"] for row in rows] == pytest.approx([0.1 * i for i in range(1, 10)])
    kept = [row["tokens_kept"] for row in rows]
    assert kept == sorted(kept, reverse=True) and kept[0] > kept[-1]  # a higher bar keeps fewer tokens
    assert (out / "thresholds.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["embedder"]["dim"] == 512 and summary["identity"]["kind"] == "hashed"

    classifier = load_classifier(out, EmbedderSpec(kind="hashed", dim=512).build())
    scores = classifier.scores(EmbedderSpec(kind="hashed", dim=512).build().embed(["def f():\n    pass\n"] * 2))
    assert scores.shape == (2,) and 0 <= scores[0] <= 1


def test_a_classifier_is_refused_with_another_embedder(tmp_path, labels):
    out = tmp_path / "classifier"
    assert main([str(labels), "--out", str(out), "--embedder-dim", "256", "--trees", "10"]) == 0
    with pytest.raises(ClassifierError, match="trained on embeddings of"):
        load_classifier(out, EmbedderSpec(kind="hashed", dim=512).build())
    with pytest.raises(ClassifierError, match="no such classifier"):
        load_classifier(tmp_path / "nowhere.joblib")


def test_threshold_by_token_budget(tmp_path, labels):
    out = tmp_path / "budget"
    args = [str(labels), "--out", str(out), "--embedder-dim", "256", "--trees", "20", "--keep-fraction", "0.4"]
    assert main(args) == 0
    chosen = json.loads((out / "classifier.json").read_text())["metrics"]["threshold"]
    assert chosen["chosen_by"] == "--keep-fraction 0.4" and 0.4 <= chosen["tokens_kept"] < 0.5


def test_budget_threshold_keeps_the_highest_scores_first():
    scores = np.array([0.9, 0.1, 0.5, 0.7])
    tokens = np.array([10, 40, 30, 20])  # 100 in all; by falling score: 10, 20, 30, 40
    assert budget_threshold(scores, tokens, 0.1) == 0.9
    assert budget_threshold(scores, tokens, 0.25) == 0.7  # 30% kept
    assert budget_threshold(scores, tokens, 0.6) == 0.5
    assert budget_threshold(scores, tokens, 1.0) == 0.1
    [row] = threshold_metrics(scores, np.array([1, 0, 0, 1]), tokens, [0.6])
    assert row == {
        "threshold": 0.6,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "documents_kept": 0.5,
        "tokens_kept": 0.3,
    }


def test_bad_labels_are_named(tmp_path, capsys):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"id": "a", "text": "x = 1", "score": 4}\n{"id": "b", "text": "y = 2"}\n')
    with pytest.raises(ClassifierError, match=r"labels.jsonl:2: field 'score' missing"):
        read_labels([path])
    path.write_text("".join(json.dumps({"text": f"x = {i}", "score": 4}) + "\n" for i in range(10)))
    assert main([str(path), "--out", str(tmp_path / "one-class")]) == 2
    assert "need at least 2 documents on each side of --label-threshold 3" in capsys.readouterr().err


def test_an_existing_classifier_is_not_overwritten(tmp_path, labels, capsys):
    out = tmp_path / "classifier"
    out.mkdir()
    (out / "classifier.joblib").write_bytes(b"mine")
    assert main([str(labels), "--out", str(out)]) == 2
    assert (out / "classifier.joblib").read_bytes() == b"mine" and "exists" in capsys.readouterr().err
