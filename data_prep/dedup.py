"""Exact, then near-duplicate removal (paper §2.1: "deduplicated" The Stack and StackOverflow), on datatrove.

    python -m data_prep.dedup --out WORK [--input PATH ...] [--stack] [--stackoverflow] [--no-near]
        [--minhash-ngrams 5] [--minhash-bands 25] [--minhash-rows 10]
        [--executor local|slurm] [--tasks N] [--workers W] ...

writes the kept documents to ``WORK/deduplicated/<task>.jsonl.gz`` (datatrove's JSONL: text, id, metadata),
the removed ones to ``WORK/exact/removed`` and ``WORK/minhash/removed``, what every step kept and dropped to
``WORK/report.json`` and the MinHash cluster sizes to ``WORK/cluster_sizes.json``.

Exact: documents with the same `document_id` (hash of normalized content, `data_prep.sources`) are one
document; one copy is kept. It runs first, so nothing later (the LLM annotation above all) is paid twice.

Near: MinHash LSH with datatrove's four stages (signatures, buckets, clusters, filter), configured for code as
BigCode deduplicated The Stack:
- shingles are 5-grams of code words (`CodeWordTokenizer`: identifiers, keywords, numbers) of the raw text.
  datatrove's default needs spaCy for English words and normalizes prose (lowercase, punctuation removed,
  which would also split ``max_len`` at the underscore, digits zeroed); none of that is applied.
- 25 bands of 10 hashes: the (b, r) that `datasketch` finds optimal (equal weight on false positives and
  negatives) for a Jaccard threshold of 0.7 with 256 permutations, BigCode's setting (25 x 10 uses 250 of them).
  Two documents of Jaccard similarity J share a band with probability 1 - (1 - J^10)^25: 0.02 at J = 0.5,
  0.14 at 0.6, 0.51 at 0.7, 0.94 at 0.8, 1.00 at 0.9. Pairs that share a band are linked, linked documents
  form a cluster, and one document per cluster is kept (datatrove checks no pairwise Jaccard after the LSH).
"""

import argparse
import json
import struct
import sys
from collections import Counter
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.dedup.exact_dedup import (
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
)
from datatrove.pipeline.readers.base import BaseReader
from datatrove.utils.hashing import HashConfig
from datatrove.utils.text import TextNormConfig

from data_prep.code_words import CodeWordTokenizer
from data_prep.sources import add_source_arguments, start_source_job
from data_prep.stages import Stage, TaskOutputReader, add_execution_arguments, job_settings, run_job, task_writer
from phi1.errors import ConfigError

RAW_TEXT = TextNormConfig(
    lowercase=False, norm_whitespace=False, remove_punctuation=False, norm_unicode_diacritics=False, norm_numbers=False
)


def code_minhash_config(ngrams: int = 5, bands: int = 25, rows: int = 10, seed: int = 1) -> MinhashConfig:
    """MinHash for code: `ngrams`-word shingles of the raw text, `bands` LSH bands of `rows` 64-bit hashes."""
    return MinhashConfig(
        n_grams=ngrams,
        num_buckets=bands,
        hashes_per_bucket=rows,
        seed=seed,
        norm_config=RAW_TEXT,
        hash_config=HashConfig(precision=64),
    )


def candidate_probability(jaccard: float, config: MinhashConfig) -> float:
    """Probability that two documents of this Jaccard similarity share an LSH band (and so are clustered)."""
    return 1 - (1 - jaccard**config.hashes_per_bucket) ** config.num_buckets


def content_id(document: Document) -> str:
    """What exact dedup compares: the document's id, a hash of its normalized content."""
    return document.id


def exact_dedup_stages(readers: list[BaseReader], work: Path) -> list[Stage]:
    """Read the sources to ``work/sources`` and keep one copy of each document in ``work/exact/kept``."""
    config = ExactDedupConfig(content_getter=content_id)
    signatures, duplicates = work / "exact" / "signatures", work / "exact" / "duplicates"
    return [
        Stage("read", [*readers, task_writer(work / "sources"), ExactDedupSignature(str(signatures), config)]),
        Stage("exact-duplicates", [ExactFindDedups(str(signatures), str(duplicates), config)], tasks=1),
        Stage(
            "exact-dedup",
            [
                TaskOutputReader(work / "sources"),
                ExactDedupFilter(str(duplicates), config, exclusion_writer=task_writer(work / "exact" / "removed")),
                task_writer(work / "exact" / "kept"),
            ],
        ),
    ]


def near_dedup_stages(source: Path, out: Path, work: Path, config: MinhashConfig) -> list[Stage]:
    """MinHash near-dedup of the task files in `source` into `out`; removed documents to ``work/minhash/removed``."""
    minhash = work / "minhash"
    signatures, buckets, clusters = minhash / "signatures", minhash / "buckets", minhash / "clusters"
    return [
        Stage(
            "minhash-signatures",
            [TaskOutputReader(source), MinhashDedupSignature(str(signatures), config, language=CodeWordTokenizer())],
        ),
        Stage(
            "minhash-buckets",
            [MinhashDedupBuckets(str(signatures), str(buckets), config=config)],
            tasks=config.num_buckets,
        ),
        Stage(
            "minhash-clusters",
            [
                MinhashDedupCluster(str(buckets), str(clusters), config=config, save_cluster_size=True),
                ClusterSizeReport(clusters, work / "cluster_sizes.json"),
            ],
            tasks=1,
        ),
        Stage(
            "minhash-dedup",
            [
                TaskOutputReader(source),
                MinhashDedupFilter(
                    str(clusters), load_cluster_sizes=True, exclusion_writer=task_writer(minhash / "removed")
                ),
                task_writer(out),
            ],
        ),
    ]


class ClusterSizeReport(PipelineStep):
    """After MinHash clustering: how many clusters of each size, written to `out` as JSON.

    Reads the ``*.sizes`` files of `MinhashDedupCluster(save_cluster_size=True)`: (document, size of its cluster)
    for every document in a cluster of two or more.
    """

    type = "🫂 - DEDUP"
    name = "📏 cluster sizes"

    def __init__(self, clusters: str | Path, out: str | Path):
        super().__init__()
        self.clusters, self.out = str(clusters), str(out)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        members = Counter()  # cluster size -> documents in clusters of that size
        for path in sorted(Path(self.clusters).glob("*.sizes")):
            sizes = path.read_bytes()
            for _, size in struct.iter_unpack("<II", sizes):
                members[size] += 1
        clusters = {size: count // size for size, count in sorted(members.items())}
        report = {
            "clusters": sum(clusters.values()),
            "documents_in_clusters": sum(members.values()),
            "removed": sum(members.values()) - sum(clusters.values()),
            "largest": max(clusters, default=0),
            "clusters_by_size": {str(size): count for size, count in clusters.items()},
        }
        Path(self.out).write_text(json.dumps(report, indent=2) + "\n")
        self.stat_update("clusters", value=report["clusters"])
        yield from data or ()


def add_minhash_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("near deduplication (MinHash LSH)")
    group.add_argument("--minhash-ngrams", type=int, default=5, help="code words per shingle")
    group.add_argument("--minhash-bands", type=int, default=25, help="LSH bands (one datatrove bucket each)")
    group.add_argument("--minhash-rows", type=int, default=10, help="hashes per LSH band")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path, help="work folder (resumed if it holds this job)")
    add_source_arguments(parser)
    parser.add_argument("--no-near", action="store_true", help="exact deduplication only")
    add_minhash_arguments(parser)
    add_execution_arguments(parser)
    args = parser.parse_args(argv)
    try:
        options, readers = start_source_job(args, job_settings(args))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    work = args.out
    stages = exact_dedup_stages(readers, work)
    if args.no_near:
        stages[-1].pipeline[-1] = task_writer(work / "deduplicated")
    else:
        config = code_minhash_config(args.minhash_ngrams, args.minhash_bands, args.minhash_rows)
        stages += near_dedup_stages(work / "exact" / "kept", work / "deduplicated", work, config)
    status = run_job(stages, options, work / "logs", work / "report.json")
    if status == 0 and options.executor == "local":
        print(f"{work / 'deduplicated'}: kept documents; {work / 'report.json'}: what each step kept and dropped")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
