"""Run a data_prep job as a chain of datatrove stages, on this machine or a SLURM cluster, and report what
every step of every stage kept and dropped.

A stage is one datatrove pipeline run as `tasks` independent tasks (task r reads shard r of its input). With
`--executor local` the stages run one after another through `LocalPipelineExecutor` (`--workers` tasks at a
time); with `--executor slurm` each becomes a `SlurmPipelineExecutor` job array that starts when the previous
stage's array has succeeded (`afterok`), and the command returns once the jobs are queued. Both record each task's
completion under ``LOGS/<stage>/completions``, so a rerun of the same command skips the tasks already done:
interrupted work resumes.

Stages hand documents on per task: task r of a stage writes ``<folder>/<r>.jsonl.gz`` (`task_writer`) and task r
of the next stage reads exactly that file (`TaskOutputReader`). datatrove's multi-pass steps (exact and MinHash
dedup) identify a document by its position in its task's stream, so each task must re-read the very stream it
signed; reading "every file whose index is r modulo the task count", datatrove's default sharding, would shift
when a task writes nothing.
"""

import argparse
import gzip
import json
import os
import shlex
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.stats import MetricStats

from phi1.errors import ConfigError

EXECUTORS = ("local", "slurm")
TASK_FILE = "${rank}.jsonl.gz"
REPORTED = ("total", "forwarded", "dropped")  # the columns of the printed report; every metric is in the JSON


@dataclass
class Stage:
    """One datatrove pipeline run as `tasks` tasks (None: the job's `--tasks`)."""

    name: str
    pipeline: list[PipelineStep]
    tasks: int | None = None
    skip_completed: bool = True  # False: a rerun runs it again (a stage that itself skips what is done)


@dataclass
class ExecutionOptions:
    """Where and how stages run; `add_execution_arguments` makes them flags."""

    executor: str = "local"
    tasks: int = 1
    workers: int = -1  # local: tasks run at once (-1: as many as CPUs); slurm: array throttle (-1: none)
    job_name: str = "phi1-data"
    slurm_partition: str | None = None
    slurm_time: str = "24:00:00"
    slurm_cpus_per_task: int = 1
    slurm_mem_per_cpu_gb: int = 2
    slurm_gpus_per_task: int = 0
    slurm_qos: str | None = None
    slurm_env_command: str | None = None  # default: activate the virtualenv of this interpreter
    slurm_sbatch_args: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.tasks < 1:
            raise ConfigError(f"--tasks must be at least 1, got {self.tasks}")
        if self.workers == 0 or self.workers < -1:
            raise ConfigError(f"--workers must be -1 or at least 1, got {self.workers}")
        if self.executor == "slurm" and not self.slurm_partition:
            raise ConfigError("--executor slurm needs --slurm-partition (see `sinfo` for the partitions)")


def add_execution_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("execution (datatrove)")
    group.add_argument("--executor", choices=EXECUTORS, default="local", help="run here, or as SLURM job arrays")
    group.add_argument("--tasks", type=int, default=1, help="tasks per stage: input shards processed independently")
    group.add_argument("--workers", type=int, default=-1, help="tasks at once (local: -1 = CPUs; slurm: -1 = all)")
    group.add_argument("--job-name", default="phi1-data", help="SLURM job name prefix")
    group.add_argument("--slurm-partition", help="SLURM partition (needed with --executor slurm)")
    group.add_argument("--slurm-time", default="24:00:00", help="time limit of each SLURM task")
    group.add_argument("--slurm-cpus-per-task", type=int, default=1)
    group.add_argument("--slurm-mem-per-cpu-gb", type=int, default=2)
    group.add_argument("--slurm-gpus-per-task", type=int, default=0)
    group.add_argument("--slurm-qos", help="SLURM quality of service, if the cluster uses them")
    group.add_argument(
        "--slurm-env-command",
        help="shell line that prepares a task's environment (default: source this interpreter's virtualenv)",
    )
    group.add_argument(
        "--slurm-sbatch-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra #SBATCH option, e.g. account=myproject (repeatable)",
    )


def job_settings(args: argparse.Namespace, runtime: Collection[str] = ()) -> dict:
    """The flags that decide what a job makes. Left out: the execution flags, as a rerun may change where it runs
    (but not --tasks, which decides how documents are split between task files), and the `runtime` flags, which
    change only how it runs (a device, a batch size, an LLM engine's concurrency or budget)."""
    return {
        key: value
        for key, value in vars(args).items()
        if key not in ("executor", "workers", "job_name", *runtime) and not key.startswith("slurm_")
    }


def execution_options(args: argparse.Namespace) -> ExecutionOptions:
    sbatch_args = {}
    for item in args.slurm_sbatch_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--slurm-sbatch-arg expects KEY=VALUE, got {item!r}")
        sbatch_args[key.lstrip("-")] = value
    return ExecutionOptions(
        executor=args.executor,
        tasks=args.tasks,
        workers=args.workers,
        job_name=args.job_name,
        slurm_partition=args.slurm_partition,
        slurm_time=args.slurm_time,
        slurm_cpus_per_task=args.slurm_cpus_per_task,
        slurm_mem_per_cpu_gb=args.slurm_mem_per_cpu_gb,
        slurm_gpus_per_task=args.slurm_gpus_per_task,
        slurm_qos=args.slurm_qos,
        slurm_env_command=args.slurm_env_command,
        slurm_sbatch_args=sbatch_args,
    )


# ----------------------------------------------------------------------------- handing documents between stages


class TaskWriter(JsonlWriter):
    """datatrove's JsonlWriter to ``<folder>/<task>.jsonl.gz`` (text, id, metadata), gzipped at level 1: files
    between stages are written once and read once, and on Python source level 1 compresses about ten times
    faster than the default 9 for files about a quarter larger."""

    def __init__(self, folder: str | Path, **kwargs):
        super().__init__(str(folder), output_filename=TASK_FILE, compression=None, **kwargs)
        self.gzip_files: dict[str, gzip.GzipFile] = {}

    def _write(self, document: dict, file_handler, filename: str):
        compressed = self.gzip_files.get(filename)
        if compressed is None:
            compressed = self.gzip_files[filename] = gzip.GzipFile(fileobj=file_handler, mode="wb", compresslevel=1)
        super()._write(document, compressed, filename)

    def close(self):
        for compressed in self.gzip_files.values():
            compressed.close()
        self.gzip_files = {}
        super().close()


def task_writer(folder: str | Path, **kwargs) -> TaskWriter:
    """Writes each task's documents to ``folder/<task>.jsonl.gz`` (text, id, metadata)."""
    return TaskWriter(folder, **kwargs)


class TaskOutputReader(JsonlReader):
    """Task r reads ``<task>.jsonl.gz`` written by task r of the previous stage (nothing if it wrote none)."""

    name = "🐿 Jsonl (same task)"

    def __init__(self, data_folder: str | Path, **kwargs):
        super().__init__(str(data_folder), **kwargs)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        name = TASK_FILE.replace("${rank}", f"{rank:05d}")
        if self.data_folder.isfile(name):
            for document in self.read_files_shard([name]):
                self.update_doc_stats(document)
                yield document


# ----------------------------------------------------------------------------- executors


def _env_command(options: ExecutionOptions) -> str:
    if options.slurm_env_command:
        return options.slurm_env_command
    activate = Path(sys.prefix) / "bin" / "activate"
    if activate.is_file():
        return f"source {shlex.quote(str(activate))}"
    return f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH"


def build_executors(stages: Sequence[Stage], options: ExecutionOptions, logs: str | Path) -> list:
    """One executor per stage, logging under ``logs/<stage>``; SLURM ones chained by dependencies."""
    from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor

    executors = []
    for stage in stages:
        tasks = stage.tasks or options.tasks
        logging_dir = str(Path(logs) / stage.name)
        if options.executor == "local":
            workers = min(tasks, os.cpu_count() or 1) if options.workers == -1 else min(tasks, options.workers)
            executor = LocalPipelineExecutor(
                stage.pipeline,
                tasks=tasks,
                workers=workers,
                logging_dir=logging_dir,
                skip_completed=stage.skip_completed,
            )
        else:
            executor = SlurmPipelineExecutor(
                stage.pipeline,
                tasks=tasks,
                workers=options.workers,
                time=options.slurm_time,
                partition=options.slurm_partition,
                cpus_per_task=options.slurm_cpus_per_task,
                mem_per_cpu_gb=options.slurm_mem_per_cpu_gb,
                gpus_per_task=options.slurm_gpus_per_task,
                qos=options.slurm_qos or "",
                job_name=f"{options.job_name}-{stage.name}",
                env_command=_env_command(options),
                sbatch_args=options.slurm_sbatch_args,
                logging_dir=logging_dir,
                skip_completed=stage.skip_completed,
                depends=executors[-1] if executors else None,
            )
        executors.append(executor)
    return executors


def run_stages(stages: Sequence[Stage], options: ExecutionOptions, logs: str | Path, report: str | Path) -> list | None:
    """Run the stages here, write the report of every step (`stage_report`) to `report` as JSON, print it as a
    table and return it; or queue them on SLURM, with a last one-task stage that writes the report, and return
    None.
    """
    names = [stage.name for stage in stages]
    if options.executor == "slurm":
        stages = [*stages, Stage("report", [ReportStep(logs, names, report)], tasks=1)]
        executors = build_executors(stages, options, logs)
        executors[-1].run()  # launches the dependencies first, each waiting on the one before
        job_ids = ", ".join(
            f"{stage.name}={executor.job_id}" for stage, executor in zip(stages, executors, strict=True)
        )
        print(f"queued on SLURM: {job_ids}; the report will be {report}", file=sys.stderr)
        return None
    for executor in build_executors(stages, options, logs):
        executor.run()
    return write_report(logs, names, report)


def run_job(stages: Sequence[Stage], options: ExecutionOptions, logs: str | Path, report: str | Path) -> int:
    """`run_stages` for a command line: the exit status, a bad input met by a task (a ConfigError) reported in
    one line with status 2."""
    try:
        run_stages(stages, options, logs, report)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


# ----------------------------------------------------------------------------- report


def stage_report(logs: str | Path, names: Sequence[str]) -> list[dict]:
    """Per stage and step, the totals of datatrove's stats summed over all tasks that have finished.

    Each entry is {"stage", "step", "tasks", "stats": {metric: total}}; filters and dedup steps count
    `total`, `forwarded` and `dropped` documents; readers count `documents`, writers `total`.
    """
    report = []
    for name in names:
        files = sorted((Path(logs) / name / "stats").glob("*.json"))
        steps: dict[str, dict[str, float]] = {}
        for file in files:
            for step in json.loads(file.read_text()):
                totals = steps.setdefault(step["name"], {})
                for metric, value in step["stats"].items():
                    if "XXXXX" not in metric:  # writers count per output file name too
                        totals[metric] = totals.get(metric, 0) + MetricStats.from_dict(value).total
        for step_name, totals in steps.items():
            report.append({"stage": name, "step": step_name, "tasks": len(files), "stats": totals})
    return report


def format_report(report: list[dict]) -> str:
    """The report as a table: one row per step, with its total, forwarded and dropped documents."""
    rows = [("stage", "step", *REPORTED)]
    for entry in report:
        stats = entry["stats"]
        total = stats.get("total", stats.get("documents", ""))
        rows.append((entry["stage"], entry["step"], total, *(stats.get(key, "") for key in REPORTED[1:])))
    rows = [tuple(f"{value:,.0f}" if isinstance(value, float | int) else str(value) for value in row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def write_report(logs: str | Path, names: Sequence[str], out: str | Path) -> list[dict]:
    """`stage_report` written to `out` as JSON and printed as a table."""
    report = stage_report(logs, names)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report), file=sys.stderr)
    return report


class ReportStep(PipelineStep):
    """The last stage of a SLURM chain (one task): `write_report` once every stage before it has succeeded."""

    type = "📊 - REPORT"
    name = "stage report"

    def __init__(self, logs: str | Path, names: Sequence[str], out: str | Path):
        super().__init__()
        self.logs, self.names, self.out = str(logs), list(names), str(out)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        write_report(self.logs, self.names, self.out)
        yield from data or ()


def claim_work_folder(work: str | Path, settings: dict) -> None:
    """Record a job's settings in ``work/job.json``, or check a rerun against them.

    A rerun with the same settings resumes (completed tasks are skipped); different settings would silently mix
    two jobs' outputs, so they are refused.
    """
    path = Path(work) / "job.json"
    settings = json.loads(json.dumps(settings, default=str))  # as it reads back
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != settings:
            changed = sorted(key for key in previous.keys() | settings.keys() if previous.get(key) != settings.get(key))
            raise ConfigError(
                f"{work} holds a job with other settings ({', '.join(changed)} differ); rerun it with the same "
                "flags to resume, or choose a new --out"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
