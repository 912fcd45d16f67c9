"""The quality classifier of paper §2.1: a random forest on code-model embeddings learns the LLM's
"educational value" labels, so the rest of the corpus can be filtered without asking the LLM.

    python -m data_prep.classifier LABELS.jsonl [...] --out DIR [--embedder hashed|hf|phi1 ...]
        [--label-threshold 3] [--test-size 0.2] [--trees 100] [--seed 0]
        [--threshold P | --keep-fraction F] [--cache DIR]

Labels are JSONL records with the document's `text`, its `id` and the annotator's `score` (`data_prep.annotate`
writes them); a document is positive ("educational") when score >= --label-threshold. A stratified split holds
out --test-size of them. scikit-learn's `RandomForestClassifier`, the paper's choice, is fitted with a logistic
regression on standardized embeddings beside it as a baseline. For thresholds on P(educational) from 0.05 to
0.95 the held-out precision, recall, F1 and fraction of documents and tokens kept (tokens: code words) are
printed as a table and plotted to ``DIR/thresholds.png``. The filter's threshold is --threshold, or the one
that keeps --keep-fraction of the held-out tokens (a token budget), or by default the one with the best
held-out F1. Note that the held-out set is the annotated sample, which `annotate` stratifies: its kept fraction
estimates the corpus's only as well as the sample represents it; `data_prep.filter` reports the real one.

``DIR/classifier.joblib`` holds both models, the threshold and the embedder (spec and identity); loading it with
another embedder is refused (`load_classifier`). ``DIR/classifier.json`` holds the same minus the models, and the
metrics. Embeddings are cached (--cache, default ``DIR/embeddings``), so retraining embeds nothing again.
"""

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from data_prep.code_words import code_words
from data_prep.embed import Embedder, EmbedderSpec, EmbeddingCache, add_embedder_arguments, embed_documents
from data_prep.embed import embedder_spec as spec_from_args
from phi1.errors import ConfigError
from phi1.jsonl import JsonlError, read_jsonl

FORMAT = "phi1-quality-classifier/1"
TABLE_THRESHOLDS = np.round(np.arange(0.1, 0.91, 0.1), 2)
PLOT_THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.01), 2)


class ClassifierError(ConfigError):
    """Bad labels, or a classifier used with an embedder it was not trained on."""


@dataclass
class QualityClassifier:
    forest: object  # sklearn RandomForestClassifier
    baseline: object  # sklearn Pipeline(StandardScaler, LogisticRegression)
    threshold: float  # keep a document when P(educational) >= threshold
    embedder: dict  # EmbedderSpec.to_dict() of the embedder it was trained on
    identity: dict  # that embedder's identity
    label_threshold: int
    metrics: dict = field(default_factory=dict)

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """P(educational) for each (N, dim) embedding, by the random forest."""
        return self.forest.predict_proba(vectors)[:, list(self.forest.classes_).index(1)]

    def check_embedder(self, embedder: Embedder) -> None:
        if embedder.identity != self.identity:
            raise ClassifierError(
                f"this classifier was trained on embeddings of {json.dumps(self.identity, sort_keys=True)}, "
                f"not of {json.dumps(embedder.identity, sort_keys=True)}; use the same embedder or retrain it"
            )


def save_classifier(classifier: QualityClassifier, folder: Path) -> Path:
    import joblib
    import sklearn

    folder.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "sklearn": sklearn.__version__, **classifier.__dict__}
    path = folder / "classifier.joblib"
    joblib.dump(state, path)
    summary = {key: value for key, value in state.items() if key not in ("forest", "baseline")}
    (folder / "classifier.json").write_text(json.dumps(summary, indent=2) + "\n")
    return path


def load_classifier(path: str | Path, embedder: Embedder | None = None) -> QualityClassifier:
    """The classifier saved at `path` (a .joblib file or its folder); with `embedder`, refused unless it is the
    embedder the classifier was trained on. Like any pickle, only load files you trust."""
    import joblib

    path = Path(path)
    path = path / "classifier.joblib" if path.is_dir() else path
    try:
        state = joblib.load(path)
    except FileNotFoundError:
        raise ClassifierError(f"{path}: no such classifier (train one with python -m data_prep.classifier)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ClassifierError(f"{path}: not a classifier written by data_prep.classifier")
    classifier = QualityClassifier(**{key: value for key, value in state.items() if key not in ("format", "sklearn")})
    if embedder is not None:
        classifier.check_embedder(embedder)
    return classifier


# ----------------------------------------------------------------------------- labels


@dataclass
class Labelled:
    ids: list[str]
    texts: list[str]
    scores: np.ndarray  # the annotator's score of each document


def read_labels(paths: list[str | Path], text_field: str = "text", score_field: str = "score") -> Labelled:
    """Labelled documents from JSONL files; a document labelled twice keeps its last label."""
    from data_prep.sources import document_id

    records: dict[str, tuple[str, float]] = {}
    for path in paths:
        try:
            for number, record in read_jsonl(path):
                text, score = record.get(text_field), record.get(score_field)
                if not isinstance(text, str):
                    raise ClassifierError(f"{path}:{number}: field {text_field!r} missing or not a string")
                if not isinstance(score, int | float) or isinstance(score, bool):
                    raise ClassifierError(f"{path}:{number}: field {score_field!r} missing or not a number")
                records[record.get("id") or document_id(text)] = (text, float(score))
        except JsonlError as error:
            raise ClassifierError(str(error)) from None
    if not records:
        raise ClassifierError(f"no labelled documents in {', '.join(map(str, paths))}")
    ids = list(records)
    return Labelled(ids, [records[i][0] for i in ids], np.array([records[i][1] for i in ids]))


# ----------------------------------------------------------------------------- training and metrics


def threshold_metrics(scores: np.ndarray, labels: np.ndarray, tokens: np.ndarray, thresholds) -> list[dict]:
    """Precision, recall, F1 and the fractions of documents and tokens kept, for each threshold."""
    rows = []
    for threshold in thresholds:
        kept = scores >= threshold
        true_positives = int((kept & (labels == 1)).sum())
        precision = true_positives / kept.sum() if kept.any() else 1.0
        recall = true_positives / max(int((labels == 1).sum()), 1)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {
                "threshold": float(threshold),
                "precision": float(precision),
                "recall": float(recall),
                "f1": float(f1),
                "documents_kept": float(kept.mean()),
                "tokens_kept": float(tokens[kept].sum() / max(tokens.sum(), 1)),
            }
        )
    return rows


def budget_threshold(scores: np.ndarray, tokens: np.ndarray, keep_fraction: float) -> float:
    """The highest threshold that keeps at least `keep_fraction` of the tokens (documents by falling score)."""
    order = np.argsort(-scores, kind="stable")
    kept = np.cumsum(tokens[order]) / max(tokens.sum(), 1)
    return float(scores[order][min(int(np.searchsorted(kept, keep_fraction)), len(order) - 1)])


def train_classifier(
    vectors: np.ndarray,
    scores: np.ndarray,
    tokens: np.ndarray,
    spec: EmbedderSpec,
    identity: dict,
    label_threshold: int = 3,
    test_size: float = 0.2,
    trees: int = 100,
    seed: int = 0,
    threshold: float | None = None,
    keep_fraction: float | None = None,
) -> QualityClassifier:
    """Fit the forest and the baseline on a stratified split and choose the threshold (module docstring)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = (scores >= label_threshold).astype(int)
    counts = np.bincount(labels, minlength=2)
    held_out = max(2, int(round(test_size * len(labels))))
    if counts.min() < 2 or held_out >= len(labels) - 1:
        raise ClassifierError(
            f"need at least 2 documents on each side of --label-threshold {label_threshold} and more documents "
            f"than the held-out split; got {counts[1]} with score >= {label_threshold} and {counts[0]} below"
        )
    split = train_test_split(vectors, labels, tokens, test_size=held_out, stratify=labels, random_state=seed)
    train_x, test_x, train_y, test_y, _, test_tokens = split
    forest = RandomForestClassifier(n_estimators=trees, n_jobs=-1, random_state=seed).fit(train_x, train_y)
    baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(train_x, train_y)
    probabilities = {
        "random_forest": forest.predict_proba(test_x)[:, 1],
        "logistic_regression": baseline.predict_proba(test_x)[:, 1],
    }
    metrics = {"train": len(train_y), "held_out": len(test_y), "held_out_positive": int(test_y.sum())}
    for name, p in probabilities.items():
        metrics[name] = {
            "roc_auc": float(roc_auc_score(test_y, p)) if len(set(test_y)) == 2 else None,
            "table": threshold_metrics(p, test_y, test_tokens, TABLE_THRESHOLDS),
            "curve": threshold_metrics(p, test_y, test_tokens, PLOT_THRESHOLDS),
        }
    forest_p = probabilities["random_forest"]
    if threshold is not None:
        chosen, how = threshold, "--threshold"
    elif keep_fraction is not None:
        chosen, how = budget_threshold(forest_p, test_tokens, keep_fraction), f"--keep-fraction {keep_fraction}"
    else:
        best = max(metrics["random_forest"]["curve"], key=lambda row: row["f1"])
        chosen, how = best["threshold"], "best held-out F1"
    metrics["threshold"] = {"value": chosen, "chosen_by": how}
    metrics["threshold"].update(threshold_metrics(forest_p, test_y, test_tokens, [chosen])[0])
    return QualityClassifier(forest, baseline, float(chosen), spec.to_dict(), identity, label_threshold, metrics)


def format_table(metrics: dict) -> str:
    lines = [
        f"{'model':<20} {'threshold':>9} {'precision':>9} {'recall':>7} {'F1':>6} {'docs kept':>9} {'tokens kept':>11}"
    ]
    for name in ("random_forest", "logistic_regression"):
        for row in metrics[name]["table"]:
            lines.append(
                f"{name:<20} {row['threshold']:>9.2f} {row['precision']:>9.3f} {row['recall']:>7.3f} "
                f"{row['f1']:>6.3f} {row['documents_kept']:>9.3f} {row['tokens_kept']:>11.3f}"
            )
        auc = metrics[name]["roc_auc"]
        lines.append(f"{name:<20} ROC AUC {auc:.3f}" if auc is not None else f"{name:<20} ROC AUC n/a")
    chosen = metrics["threshold"]
    lines.append(
        f"threshold {chosen['value']:.3f} ({chosen['chosen_by']}): precision {chosen['precision']:.3f}, "
        f"recall {chosen['recall']:.3f}, F1 {chosen['f1']:.3f}, keeps {chosen['tokens_kept']:.1%} of held-out tokens"
    )
    return "\n".join(lines)


def plot_thresholds(metrics: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    colors = {"precision": "tab:blue", "recall": "tab:orange", "f1": "tab:green", "tokens_kept": "tab:gray"}
    for name, style in (("random_forest", "-"), ("logistic_regression", "--")):
        curve = metrics[name]["curve"]
        x = [row["threshold"] for row in curve]
        for key, color in colors.items():
            axis.plot(x, [row[key] for row in curve], style, color=color, label=f"{key} ({name.replace('_', ' ')})")
    axis.axvline(metrics["threshold"]["value"], color="black", linewidth=0.8, label="chosen threshold")
    axis.set_xlabel("threshold on P(educational)")
    axis.set_ylim(0, 1.02)
    axis.set_title(f"held-out set: {metrics['held_out']} documents, {metrics['held_out_positive']} educational")
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def fit_from_labels(
    labels: list[str | Path],
    out: Path,
    spec: EmbedderSpec,
    cache: Path | None = None,
    text_field: str = "text",
    score_field: str = "score",
    **options,
) -> QualityClassifier:
    """Read labels, embed them (cached), train, save ``out/classifier.joblib``, the table and the plot."""
    labelled = read_labels(labels, text_field, score_field)
    embedder = spec.build()
    cache_part = EmbeddingCache(cache or out / "embeddings", embedder, part="labels")
    vectors = embed_documents(embedder, labelled.ids, labelled.texts, cache_part, progress=True)
    cache_part.flush()
    tokens = np.array([len(code_words(text)) for text in labelled.texts])
    classifier = train_classifier(vectors, labelled.scores, tokens, spec, embedder.identity, **options)
    save_classifier(classifier, out)
    plot_thresholds(classifier.metrics, out / "thresholds.png")
    return classifier


class TrainClassifier(PipelineStep):
    """A one-task stage of a chain: `fit_from_labels`, then the table of metrics in the task's log."""

    type = "🌲 - CLASSIFIER"
    name = "train quality classifier"

    def __init__(self, labels: str | Path, out: str | Path, spec: EmbedderSpec, cache: str | Path, **options):
        super().__init__()
        self.labels, self.out, self.spec, self.cache, self.options = str(labels), str(out), spec, str(cache), options

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        classifier = fit_from_labels([self.labels], Path(self.out), self.spec, Path(self.cache), **self.options)
        print(format_table(classifier.metrics), file=sys.stderr)
        self.stat_update("held_out", value=classifier.metrics["held_out"])
        yield from data or ()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labels", nargs="+", help="JSONL files of labelled documents")
    parser.add_argument("--out", type=Path, required=True, help="folder for the classifier, its metrics and plot")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--score-field", default="score")
    parser.add_argument("--label-threshold", type=int, default=3, help="score from which a document is positive")
    parser.add_argument("--test-size", type=float, default=0.2, help="held-out fraction")
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--threshold", type=float, help="keep documents with P(educational) >= this")
    choice.add_argument("--keep-fraction", type=float, help="choose the threshold that keeps this fraction of tokens")
    parser.add_argument("--cache", type=Path, help="embedding cache folder (default OUT/embeddings)")
    add_embedder_arguments(parser)
    args = parser.parse_args(argv)
    if (args.out / "classifier.joblib").exists():
        print(f"error: {args.out / 'classifier.joblib'} exists; choose a new --out", file=sys.stderr)
        return 2
    try:
        classifier = fit_from_labels(
            args.labels,
            args.out,
            spec_from_args(args),
            args.cache,
            args.text_field,
            args.score_field,
            label_threshold=args.label_threshold,
            test_size=args.test_size,
            trees=args.trees,
            seed=args.seed,
            threshold=args.threshold,
            keep_fraction=args.keep_fraction,
        )
    except (ClassifierError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(classifier.metrics))
    print(f"{args.out / 'classifier.joblib'}; plot: {args.out / 'thresholds.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
