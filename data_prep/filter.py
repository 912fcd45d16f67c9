"""Filter a corpus with the quality classifier (paper §2.1: of 35B tokens of The Stack and StackOverflow,
the ~6B the classifier rates educational are kept).

    python -m data_prep.filter --classifier DIR --out WORK [--input PATH ...] [--stack] [--stackoverflow]
        [--threshold P] [--device auto] [--embed-batch-size 16] [--classify-batch-size 256] [--cache DIR]
        [--executor local|slurm] [--tasks N] [--workers W] ...

Each task streams its share of the sources through the classifier's own embedder (the one saved with it;
--device and --embed-batch-size change only how it runs) and the random forest, --classify-batch-size
documents at a time, with a progress bar of documents per second. Documents scoring at least the threshold
(the classifier's, or --threshold) go to ``WORK/filtered/<task>.jsonl.gz``, the others to ``WORK/dropped/``;
both keep their P(educational) as `metadata.quality_score`. ``WORK/report.json`` counts the documents kept and
dropped, and their characters (`doc_len` of the reader, all, and of the filter, those kept).

Interrupted work resumes: finished tasks are skipped (datatrove's completion markers), and an interrupted
task finds the embeddings it had computed in the cache (``WORK/embeddings`` unless --cache), so only the
classifier, which is cheap, runs again over them.
"""

import argparse
import sys
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter
from tqdm import tqdm

from data_prep.classifier import load_classifier
from data_prep.embed import EMBEDDER_RUNTIME_FLAGS, EmbedderSpec, EmbeddingCache, embed_documents
from data_prep.sources import add_source_arguments, start_source_job
from data_prep.stages import Stage, add_execution_arguments, job_settings, run_job, task_writer
from phi1.errors import ConfigError

RUNTIME_FLAGS = (*EMBEDDER_RUNTIME_FLAGS, "classify_batch_size")  # a rerun may change them (`job_settings`)


class QualityFilter(BaseFilter):
    """Keeps documents whose P(educational) >= threshold; every document gets `metadata["quality_score"]`."""

    name = "🎓 educational value"

    def __init__(
        self,
        classifier: str | Path,
        cache: str | Path,
        threshold: float | None = None,
        device: str | None = None,
        embed_batch_size: int | None = None,
        batch_size: int = 256,
        exclusion_writer: DiskWriter | None = None,
        progress: bool = True,
    ):
        super().__init__(exclusion_writer, batch_size)
        self.classifier_path, self.cache_folder = str(classifier), str(cache)
        self.threshold, self.device, self.embed_batch_size = threshold, device, embed_batch_size
        self.progress = progress
        self.classifier = self.embedder = self.cache = None  # built in the task, not pickled into it

    def setup(self, rank: int) -> None:
        self.classifier = load_classifier(self.classifier_path)
        spec = dict(self.classifier.embedder)
        spec.update(
            {
                key: value
                for key, value in (("device", self.device), ("batch_size", self.embed_batch_size))
                if value is not None
            }
        )
        self.embedder = EmbedderSpec(**spec).build()
        self.classifier.check_embedder(self.embedder)  # the same model, weights and settings it was trained on
        self.cache = EmbeddingCache(self.cache_folder, self.embedder, part=f"task-{rank:05d}")
        if self.threshold is None:
            self.threshold = self.classifier.threshold

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self.setup(rank)
        bar = tqdm(data, unit="doc", desc=f"filter (task {rank})", disable=not self.progress, mininterval=1)
        try:
            yield from super().run(bar, rank, world_size)
        finally:
            self.cache.flush()
            bar.close()

    def filter_batch(self, batch: list[Document]) -> list[bool]:
        ids, texts = [doc.id for doc in batch], [doc.text for doc in batch]
        scores = self.classifier.scores(embed_documents(self.embedder, ids, texts, self.cache, len(batch)))
        for doc, score in zip(batch, scores, strict=True):
            doc.metadata["quality_score"] = float(score)
        return [bool(score >= self.threshold) for score in scores]

    def filter(self, doc: Document) -> bool:
        return self.filter_batch([doc])[0]


def filter_stage(
    input_steps: list,
    out: Path,
    dropped: Path,
    classifier: Path,
    cache: Path,
    threshold=None,
    device=None,
    embed_batch_size=None,
    batch_size: int = 256,
) -> Stage:
    """One stage: the input steps, then the filter, writing kept documents to `out` and dropped ones to `dropped`."""
    step = QualityFilter(
        classifier, cache, threshold, device, embed_batch_size, batch_size, exclusion_writer=task_writer(dropped)
    )
    return Stage("quality-filter", [*input_steps, step, task_writer(out)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classifier", type=Path, required=True, help="classifier.joblib or its folder")
    parser.add_argument("--out", type=Path, required=True, help="work folder (resumed if it holds this job)")
    add_source_arguments(parser)
    parser.add_argument("--threshold", type=float, help="keep P(educational) >= this (default: the classifier's)")
    parser.add_argument("--device", help="device of the embedder (default: the classifier's, usually auto)")
    parser.add_argument("--embed-batch-size", type=int, help="documents per model forward pass")
    parser.add_argument("--classify-batch-size", type=int, default=256, help="documents per classifier call")
    parser.add_argument("--cache", type=Path, help="embedding cache (default OUT/embeddings)")
    add_execution_arguments(parser)
    args = parser.parse_args(argv)
    try:
        load_classifier(args.classifier)  # fail now, not in every task
        settings = job_settings(args, RUNTIME_FLAGS) | {"classifier": str(args.classifier.resolve())}
        options, readers = start_source_job(args, settings)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    work = args.out
    stage = filter_stage(
        readers,
        work / "filtered",
        work / "dropped",
        args.classifier,
        args.cache or work / "embeddings",
        args.threshold,
        args.device,
        args.embed_batch_size,
        args.classify_batch_size,
    )
    return run_job([stage], options, work / "logs", work / "report.json")


if __name__ == "__main__":
    raise SystemExit(main())
