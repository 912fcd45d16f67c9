"""The whole filtered code-language dataset of paper §2.1 in one datatrove chain, from raw sources to shards.

    python -m data_prep.pipeline --out WORK [--input PATH ...] [--stack] [--stackoverflow]
        --model gpt-4 --n-annotate 100000 [engine flags: --base-url --concurrency --max-cost-usd ...]
        [--embedder hf --embedder-model Salesforce/codegen-350M-mono --device cuda ...]
        [--label-threshold 3] [--keep-fraction F | --quality-threshold P]
        [--benchmarks humaneval,mbpp] [--tau 0.9] [--tokenizer TOKENIZER]
        [--executor local|slurm] [--tasks N] [--workers W] [--slurm-partition P ...]

Stages, each a datatrove pipeline run by `--tasks` tasks (or one), here one after another or on SLURM as job
arrays chained by dependencies; every module also runs alone with its own CLI:

    read, exact-duplicates, exact-dedup                 data_prep.dedup (exact; ids from data_prep.sources)
    minhash-signatures, -buckets, -clusters, -dedup     data_prep.dedup (near, MinHash LSH for code)
    sample-keys, sample-choose, sample-fetch, annotate  data_prep.annotate (LLM ratings of a stratified sample)
    classifier                                          data_prep.classifier (embeddings + random forest)
    quality-filter                                      data_prep.filter
    decontaminate, decontamination-report               data_prep.decontaminate (HumanEval, MBPP)
    shards                                              data_prep.build_shards (with --tokenizer)

Outputs under WORK: ``deduplicated/``, ``annotation/labels.jsonl``, ``classifier/`` (model, metrics, plot),
``filtered/`` and ``dropped/``, ``clean/`` (the dataset, datatrove JSONL: text, id, metadata with origin and
quality_score), ``decontamination/report.json``, ``shards/`` and ``report.json``: what every step of every
stage kept and dropped. A rerun of the same command resumes: finished tasks are skipped, paid LLM answers and
computed embeddings are reused. Exit status: 0 when done (or queued on SLURM), 1 when the LLM engine cannot go on,
2 for bad flags or input, 3 when --max-cost-usd stopped the annotation (the chain stops there; a rerun with a
higher cap carries on).
"""

import argparse
import sys
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from data_prep.annotate import StoppedAtBudget, annotation_stages
from data_prep.classifier import TrainClassifier
from data_prep.decontaminate import DecontaminationFilter, DecontaminationReport
from data_prep.dedup import add_minhash_arguments, code_minhash_config, exact_dedup_stages, near_dedup_stages
from data_prep.embed import EMBEDDER_RUNTIME_FLAGS, add_embedder_arguments, embedder_spec
from data_prep.filter import filter_stage
from data_prep.sources import add_source_arguments, start_source_job
from data_prep.stages import Stage, TaskOutputReader, add_execution_arguments, job_settings, run_job, task_writer
from phi1.errors import ConfigError


class BuildShards(PipelineStep):
    """A one-task stage: `data_prep.build_shards.build_shards` over a folder of task files."""

    type = "🔢 - TOKENIZE"
    name = "build shards"

    def __init__(self, tokenizer: str, out: str | Path, inputs: str | Path, field: str = "text"):
        super().__init__()
        self.tokenizer, self.out, self.inputs, self.field = tokenizer, str(out), str(inputs), field

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from data_prep.build_shards import build_shards

        manifest = build_shards(self.tokenizer, self.out, [self.inputs], field=self.field)
        self.stat_update("documents", value=manifest["num_documents"])
        self.stat_update("tokens", value=manifest["num_tokens"])
        yield from data or ()


def chain(args: argparse.Namespace, readers: list, engine_settings) -> list[Stage]:
    work = args.out
    spec = embedder_spec(args)
    stages = exact_dedup_stages(readers, work)
    config = code_minhash_config(args.minhash_ngrams, args.minhash_bands, args.minhash_rows)
    stages += near_dedup_stages(work / "exact" / "kept", work / "deduplicated", work, config)
    stages += annotation_stages(
        work / "deduplicated",
        work / "annotation",
        args.n_annotate,
        args.seed,
        args.model,
        engine_settings,
        args.annotate_max_chars,
    )
    cache = work / "embeddings"
    train = TrainClassifier(
        work / "annotation" / "labels.jsonl",
        work / "classifier",
        spec,
        cache,
        label_threshold=args.label_threshold,
        trees=args.trees,
        seed=args.seed,
        threshold=args.quality_threshold,
        keep_fraction=args.keep_fraction,
    )
    stages.append(Stage("classifier", [train], tasks=1))
    stages.append(
        filter_stage(
            [TaskOutputReader(work / "deduplicated")],
            work / "filtered",
            work / "dropped",
            work / "classifier",
            cache,
            device=args.device,
            embed_batch_size=args.embed_batch_size,
        )
    )
    benchmarks = [name.strip() for name in args.benchmarks.split(",") if name.strip()]
    decontaminate = DecontaminationFilter(
        work / "decontamination" / "parts",
        benchmarks,
        {"humaneval": args.humaneval_data, "mbpp": args.mbpp_data},
        args.tau,
        min_nodes=args.min_nodes,
        exclusion_writer=task_writer(work / "decontamination" / "flagged"),
    )
    stages.append(
        Stage("decontaminate", [TaskOutputReader(work / "filtered"), decontaminate, task_writer(work / "clean")])
    )
    report = DecontaminationReport(
        work / "decontamination" / "parts", work / "decontamination" / "report.json", decontaminate.settings
    )
    stages.append(Stage("decontamination-report", [report], tasks=1))
    if args.tokenizer:
        stages.append(Stage("shards", [BuildShards(args.tokenizer, work / "shards", work / "clean")], tasks=1))
    return stages


def build_parser() -> argparse.ArgumentParser:
    from data_prep.llm import add_engine_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder (resumed if it holds this job)")
    add_source_arguments(parser)
    add_minhash_arguments(parser)
    group = parser.add_argument_group("annotation")
    group.add_argument("--n-annotate", type=int, required=True, help="documents the LLM rates")
    group.add_argument("--annotate-max-chars", type=int, default=6000, help="characters sent per document")
    group.add_argument("--seed", type=int, default=0, help="of the sample and the classifier")
    add_engine_arguments(parser)
    group = parser.add_argument_group("classifier and filter")
    group.add_argument("--label-threshold", type=int, default=3, help="rating from which a document is educational")
    group.add_argument("--trees", type=int, default=100, help="random forest size")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument("--quality-threshold", type=float, help="keep P(educational) >= this")
    choice.add_argument("--keep-fraction", type=float, help="threshold keeping this fraction of held-out tokens")
    add_embedder_arguments(parser)
    group = parser.add_argument_group("decontamination")
    group.add_argument("--benchmarks", default="humaneval,mbpp")
    group.add_argument("--tau", type=float, default=0.9, help="AST match rate from which a document is dropped")
    group.add_argument("--min-nodes", type=int, default=16, help="smallest reference solution the AST test uses")
    group.add_argument("--humaneval-data", help="local HumanEval.jsonl[.gz]")
    group.add_argument("--mbpp-data", help="local MBPP JSONL (default: the bundled test split)")
    parser.add_argument("--tokenizer", help="tokenizer.json, folder or hub id: build shards of the clean data")
    add_execution_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from data_prep.llm import ENGINE_RUNTIME_FLAGS, EngineError, engine_settings

    cli = build_parser()
    args = cli.parse_args(argv)
    settings = engine_settings(args, cli)
    try:
        if args.n_annotate < 2:
            raise ConfigError("--n-annotate must be at least 2 (the classifier needs both classes)")
        if not 0 < args.tau <= 1:
            raise ConfigError(f"--tau is an AST match rate in (0, 1], got {args.tau}")
        embedder_spec(args)  # a bad embedder stops here
        options, readers = start_source_job(args, job_settings(args, ENGINE_RUNTIME_FLAGS + EMBEDDER_RUNTIME_FLAGS))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        status = run_job(chain(args, readers, settings), options, args.out / "logs", args.out / "report.json")
    except EngineError as error:  # a refused key, an unknown model: nothing to retry
        print(f"error: {error}", file=sys.stderr)
        return 1
    except StoppedAtBudget as error:  # the chain stops before the classifier; a rerun carries on
        print(error, file=sys.stderr)
        return 3
    if status == 0 and options.executor == "local":
        print(f"{args.out / 'clean'}: the filtered, deduplicated, decontaminated data; {args.out / 'report.json'}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
