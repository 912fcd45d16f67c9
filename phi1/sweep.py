"""Ablation sweeps (paper §2 and Figure 2.1: data, model size, finetuning): one `phi1.cli fit` per point of a
grid of config overrides, run here one after another or on SLURM as one job array, and a report that puts
every point's final metrics in one table and all their curves in one plot.

    python -m phi1.sweep run experiments/sweeps/tiny.yaml --executor local [--dry-run]
    python -m phi1.sweep run experiments/sweeps/data.yaml --executor slurm [--sbatch="--time=2-00:00:00"]
    python -m phi1.sweep report experiments/sweeps/tiny.yaml

A sweep file names the base config(s), stacked as repeated `--config`, a grid of overrides (every
combination runs) and optional fixed overrides; keys are LightningCLI's dotted argument names:

    base: [experiments/phi1.yaml, experiments/phi1-small.yaml]
    name: data-ablation
    grid:
      data.init_args.sources: [{data/stack_unfiltered: 1.0}, {data/codetextbook/filtered_code: 1.0}]
      trainer.max_steps: [12000, 36000]
    fixed:
      trainer.devices: 8

A point is `fit --config BASE... --KEY VALUE... --trainer.logger.init_args.name NAME/SLUG`, SLUG spelled from
its grid values (`sources=stack_unfiltered-1,max_steps=12000`), so its run folder is
`<logger save_dir>/NAME/SLUG`. Every point is resolved by the real CLI parser before anything starts, so a
bad key or value stops the sweep at once. When a point starts it is planned from its run folder: done when
its newest checkpoint reached `trainer.max_steps` (skipped), resumed from that checkpoint when there is
one, started afresh otherwise. On SLURM each array task plans its point when it starts (`point`
subcommand), so a requeued task resumes from the checkpoint Lightning saved on SIGUSR1.
"""

import argparse
import contextlib
import csv
import hashlib
import io
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from phi1.errors import ConfigError
from phi1.jsonl import read_jsonl

KEYS = {"base", "name", "grid", "fixed"}
SET_BY_SWEEP = {"trainer.logger.init_args.name", "ckpt_path", "config"}


@dataclass
class Sweep:
    path: Path
    name: str
    base: list[str]
    grid: dict[str, list]
    fixed: dict


@dataclass
class Point:
    index: int
    overrides: dict  # grid key -> this point's value
    labels: dict  # grid key -> the value's short label
    slug: str


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; a problem is a `ConfigError` naming the file and field."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        why = f"{e.__class__.__name__}: {e}".replace("\n", " ")
        raise ConfigError(f"{path}: cannot read the sweep file ({why})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: a sweep file is a mapping with keys {sorted(KEYS)}")
    if unknown := sorted(set(spec) - KEYS):
        raise ConfigError(f"{path}: unknown key(s) {unknown}; a sweep file has {sorted(KEYS)}")
    if missing := sorted({"base", "name", "grid"} - set(spec)):
        raise ConfigError(f"{path}: missing key(s) {missing}")
    name = spec["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(f"{path}: 'name' must be a folder name of letters, digits, '.', '_' or '-', not {name!r}")
    base = [spec["base"]] if isinstance(spec["base"], str) else spec["base"]
    if not isinstance(base, list) or not base or not all(isinstance(b, str) for b in base):
        raise ConfigError(f"{path}: 'base' must be a config path or a list of them (stacked like repeated --config)")
    if missing := [b for b in base if not Path(b).is_file()]:
        raise ConfigError(f"{path}: 'base' config(s) {missing} not found (paths are relative to {Path.cwd()})")
    grid, fixed = spec["grid"], spec.get("fixed") or {}
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{path}: 'grid' is empty; give at least one key with a list of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid key {key!r} needs a non-empty list of values, not {values!r}")
    if not isinstance(fixed, dict):
        raise ConfigError(f"{path}: 'fixed' must be a mapping of dotted keys to values")
    for key in [*grid, *fixed]:
        if key in SET_BY_SWEEP or key.startswith("--"):
            raise ConfigError(f"{path}: key {key!r} is the sweep's to set (run name, checkpoint; configs go in 'base')")
    if both := sorted(set(grid) & set(fixed)):
        raise ConfigError(f"{path}: key(s) {both} are both in 'grid' and in 'fixed'")
    return Sweep(path, name, base, grid, fixed)


def short_value(value) -> str:
    """A value as a few file-name characters: a path by its last part, a mapping as key-value pairs."""
    if isinstance(value, dict):
        return "+".join(f"{short_value(k)}-{short_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "+".join(short_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and "/" in value.strip("/"):
        return Path(value).name
    return str(value)


def short_values(values: list) -> list[str]:
    """A grid key's values as short labels; paths by the parts in which they differ
    (runs/size/phi-1/checkpoints/last.ckpt and runs/size/phi-1-small/... -> phi-1, phi-1-small)."""
    if len(values) > 1 and all(isinstance(v, str) and "/" in v for v in values):
        parts = [Path(v).parts for v in values]
        lead = len(os.path.commonprefix(parts))
        trail = min(len(os.path.commonprefix([p[::-1] for p in parts])), min(map(len, parts)) - lead - 1)
        return ["/".join(p[lead : len(p) - max(trail, 0)]) or p[-1] for p in parts]
    return [short_value(v) for v in values]


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its shortest unique tail: `trainer.max_steps` -> `max_steps`."""
    short = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if sum(k.split(".")[-n:] == parts[-n:] for k in keys) == 1:
                break
        short[key] = tail
    return short


def grid_points(sweep: Sweep) -> list[Point]:
    """Every combination of the grid's values, in the file's order, each with a unique file-name slug."""
    keys = list(sweep.grid)
    short = short_keys(keys)
    labels = [short_values(values) for values in sweep.grid.values()]
    points = []
    for i, chosen in enumerate(itertools.product(*(range(len(values)) for values in sweep.grid.values()))):
        overrides = {k: sweep.grid[k][j] for k, j in zip(keys, chosen, strict=True)}
        label = {k: labels[n][j] for n, (k, j) in enumerate(zip(keys, chosen, strict=True))}
        slug = ",".join(f"{short[k]}={label[k]}" for k in keys)
        points.append(Point(i, overrides, label, re.sub(r"[^A-Za-z0-9._+=,-]", "_", slug)))
    counts = {}
    for p in points:
        counts[p.slug] = counts.get(p.slug, 0) + 1
    for p in points:  # spelled alike (long, or values that differ only in their folders): add a digest
        if counts[p.slug] > 1 or len(p.slug) > 120:
            digest = hashlib.sha1(json.dumps(p.overrides, sort_keys=True).encode()).hexdigest()[:8]
            p.slug = f"{p.slug[:100]}-{digest}"
    return points


def cli_value(value) -> str:
    """An override as one command-line value; jsonargparse reads non-strings as JSON/YAML."""
    return value if isinstance(value, str) else json.dumps(value)


def fit_args(sweep: Sweep, point: Point) -> list[str]:
    args = [a for b in sweep.base for a in ("--config", b)]
    for key, value in {**sweep.fixed, **point.overrides}.items():
        args += [f"--{key}", cli_value(value)]
    return args + ["--trainer.logger.init_args.name", f"{sweep.name}/{point.slug}"]


def resolve(sweep: Sweep, point: Point) -> dict:
    """The point's whole `fit` config, as the real CLI parses it (`--print_config`), without running it."""
    from phi1.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "LightningCLI's args parameter")  # we are not running from sys.argv
            main(["fit", *fit_args(sweep, point), "--print_config"])
    except SystemExit as e:
        if e.code not in (0, None):
            lines = err.getvalue().strip().splitlines()
            first = next((i for i, line in enumerate(lines) if line.startswith("error:")), len(lines) - 1)
            why = " ".join(line.strip() for line in lines[first:]).removeprefix("error:").strip()
            raise ConfigError(f"{sweep.path}: point {point.slug}: {why or f'the CLI exited {e.code}'}") from None
    return yaml.safe_load(out.getvalue())


@dataclass
class Plan:
    """Where a point stands: its run folder, its scheduled steps and its newest checkpoint (last or hpc)."""

    point: Point
    config: dict
    run_dir: Path
    max_steps: int
    newest: Path | None
    step: int | None  # the newest checkpoint's global step

    @property
    def done(self) -> bool:
        return self.step is not None and self.step >= self.max_steps

    def status(self) -> str:
        if self.done:
            return f"done (step {self.step})"
        if self.newest:
            return f"resumes from {self.newest} (step {self.step} of {self.max_steps})"
        return "starts"


def plan(sweep: Sweep, point: Point) -> Plan:
    """The point's config and run folder (as `phi1.cli` places it: `<save_dir>/<name>`) and how far it got."""
    from phi1.cli import checkpoint_step, newest_checkpoint, run_folder

    config = resolve(sweep, point)
    max_steps = config["trainer"].get("max_steps") or -1
    if max_steps <= 0:
        raise ConfigError(f"{sweep.path}: point {point.slug}: trainer.max_steps must be set (a sweep point ends there)")
    logger = (config["trainer"].get("logger") or {}).get("init_args") or {}
    if "save_dir" not in logger:
        raise ConfigError(f"{sweep.path}: point {point.slug}: trainer.logger must be a TensorBoardLogger with save_dir")
    run_dir = run_folder(logger["save_dir"], logger.get("name"), logger.get("version"))
    newest = newest_checkpoint(run_dir)
    return Plan(point, config, run_dir, max_steps, newest, checkpoint_step(newest) if newest else None)


def fit_command(sweep: Sweep, p: Plan) -> list[str]:
    resume = ["--ckpt_path", "last"] if p.newest else []  # the CLI resolves it to the same newest checkpoint
    return [sys.executable, "-m", "phi1.cli", "fit", *fit_args(sweep, p.point), *resume]


def run_local(sweep: Sweep, plans: list[Plan], dry_run: bool) -> int:
    """Run the points one after another in this shell; a failed point does not stop the others."""
    failed = []
    for i, p in enumerate(plans, 1):
        print(f"[{i}/{len(plans)}] {p.point.slug}: {p.status()}", file=sys.stderr, flush=True)
        if p.done:
            continue
        command = fit_command(sweep, p)
        if dry_run:
            print(shlex.join(command))
        elif subprocess.run(command).returncode != 0:
            failed.append(p.point.slug)
    if failed:
        print(f"error: point(s) {', '.join(failed)} failed; a rerun resumes them", file=sys.stderr)
    return 1 if failed else 0


def sbatch_script(sweep: Sweep, plans: list[Plan]) -> str:
    """One job array over the points not done: task i plans and runs point i when it starts."""
    trainer = plans[0].config["trainer"]
    shape = {(p.config["trainer"]["num_nodes"], p.config["trainer"]["devices"]) for p in plans}
    if len(shape) > 1:
        raise ConfigError(f"{sweep.path}: one job array needs the same trainer.num_nodes and devices for every point")
    nodes, devices = shape.pop()
    if not isinstance(devices, int) or devices < 1:
        raise ConfigError(f"{sweep.path}: SLURM needs trainer.devices as a number of devices, not {devices!r}")
    workers = (plans[0].config.get("data", {}).get("init_args") or {}).get("num_workers") or 0
    sweep_dir = plans[0].run_dir.parent.resolve()
    gpus = [f"#SBATCH --gpus-per-node={devices}"] if trainer.get("accelerator") in ("gpu", "cuda") else []
    return "\n".join(
        [
            "#!/bin/bash",
            f"# phi1 sweep {sweep.name}: one array task per point (python -m phi1.sweep run --executor slurm)",
            f"#SBATCH --job-name={job_name(sweep)}",
            f"#SBATCH --array={','.join(str(p.point.index) for p in plans)}",
            f"#SBATCH --nodes={nodes}",
            f"#SBATCH --ntasks-per-node={devices}",
            *gpus,
            f"#SBATCH --cpus-per-task={workers + 1}",
            "#SBATCH --signal=SIGUSR1@90",
            "#SBATCH --requeue",
            "#SBATCH --open-mode=append",
            f"#SBATCH --output={sweep_dir}/slurm-%A_%a.out",
            f"#SBATCH --chdir={Path.cwd()}",
            "",
            "export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK  # CPU threads per task: its own cores, not the node's",
            f"exec {shlex.quote(sys.executable)} -m phi1.sweep point {shlex.quote(str(sweep.path.resolve()))} "
            '"$SLURM_ARRAY_TASK_ID"',
            "",
        ]
    )


def job_name(sweep: Sweep) -> str:
    return f"phi1-sweep-{sweep.name}"


def run_slurm(sweep: Sweep, plans: list[Plan], dry_run: bool, sbatch_args: list[str]) -> int:
    todo = [p for p in plans if not p.done]
    for p in plans:
        print(f"[{p.point.index}] {p.point.slug}: {p.status()}", file=sys.stderr)
    if not todo:
        print("every point is done", file=sys.stderr)
        return 0
    script = sbatch_script(sweep, todo)
    if dry_run:
        for p in todo:
            print(shlex.join(["srun", *fit_command(sweep, p)]))
        print(script)
        return 0
    if not shutil.which("sbatch"):
        raise ConfigError("--executor slurm: no `sbatch` on PATH")
    queued = subprocess.run(["squeue", "-h", "-n", job_name(sweep), "-o", "%i"], capture_output=True, text=True)
    if queued.stdout.strip():
        ids = " ".join(sorted(set(queued.stdout.split())))
        print(f"error: sweep {sweep.name} is already queued as job {ids}; wait for it or scancel it", file=sys.stderr)
        return 1
    sweep_dir = todo[0].run_dir.parent
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / "sweep.sbatch"
    path.write_text(script)
    out = subprocess.run(["sbatch", "--parsable", *sbatch_args, str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"error: sbatch {path}: {out.stderr.strip()}", file=sys.stderr)
        return 1
    job = out.stdout.strip().split(";")[0]
    print(f"submitted job array {job} ({len(todo)} points): squeue -j {job}; logs {sweep_dir}/slurm-{job}_*.out")
    return 0


def start_point(sweep: Sweep, index: int) -> None:
    """An array task: plan point `index` now (a requeued task finds its hpc checkpoint) and exec srun on it."""
    points = grid_points(sweep)
    if not 0 <= index < len(points):
        raise ConfigError(f"{sweep.path}: no point {index}; the grid has {len(points)}")
    p = plan(sweep, points[index])
    print(f"{p.point.slug}: {p.status()}", flush=True)
    if p.done:
        return
    command = ["srun", *fit_command(sweep, p)]
    print(shlex.join(command), flush=True)
    os.execvp("srun", command)


def scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar the run logged, tag -> {step: value}; where a resumed run logged a step again, the later
    value wins."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    latest: dict[str, dict[int, tuple[float, float]]] = {}
    for path in run_dir.rglob("events.out.tfevents.*"):
        events = EventAccumulator(str(path), size_guidance={"scalars": 0}).Reload()
        for tag in events.Tags()["scalars"]:
            series = latest.setdefault(tag, {})
            for e in events.Scalars(tag):
                if e.step not in series or e.wall_time >= series[e.step][0]:
                    series[e.step] = (e.wall_time, e.value)
    return {tag: {step: v for step, (_, v) in sorted(s.items())} for tag, s in latest.items()}


def graded_pass_at_1(run_dir: Path) -> dict[str, float]:
    """pass@1 of each `evals.evaluate` results file in the run folder (`humaneval-results.jsonl` ->
    `humaneval pass@1`): per problem, the fraction of its samples that passed, averaged over problems."""
    found = {}
    for path in sorted(run_dir.rglob("*results.jsonl")):
        per_task: dict[str, list[bool]] = {}
        for n, row in read_jsonl(path):
            if "task_id" not in row or "passed" not in row:
                raise ConfigError(f"{path}:{n}: not an evals.evaluate result row (it needs task_id and passed)")
            per_task.setdefault(str(row["task_id"]), []).append(bool(row["passed"]))
        if per_task:
            name = path.name.removesuffix("results.jsonl").rstrip("-_") or "eval"
            found[f"{name} pass@1"] = sum(sum(v) / len(v) for v in per_task.values()) / len(per_task)
    return found


REPORTED = re.compile(r"(train/loss|val/loss(/.*)?|eval/.*pass@1)$")


def report(sweep: Sweep, plans: list[Plan]) -> tuple[list[dict], dict[str, dict[str, dict[int, float]]]]:
    """One row per point (its grid values, status, final step and metrics) and each point's curves."""
    rows, curves = [], {}
    for p in plans:
        logged = scalars(p.run_dir) if p.run_dir.is_dir() else {}
        curves[p.point.slug] = logged
        row = {"point": p.point.slug, **p.point.labels}
        row["status"] = "done" if p.done else "unfinished" if p.step is not None else "not started"
        row["step"] = p.step
        row.update({tag: series[max(series)] for tag, series in logged.items() if REPORTED.match(tag) and series})
        row.update(graded_pass_at_1(p.run_dir) if p.run_dir.is_dir() else {})
        rows.append(row)
    return rows, curves


def columns(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(c for row in rows for c in row))


def markdown_table(rows: list[dict]) -> str:

    def cell(v):
        return "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    names = columns(rows)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in names) + " |" for row in rows]
    return "\n".join(lines)


def plot_curves(curves: dict[str, dict[str, dict[int, float]]], path: Path) -> None:
    """train/loss, val/loss and pass@1 against step, one line per point, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = [t for t in ("train/loss", "val/loss") if any(t in c for c in curves.values())]
    tags += sorted({t for c in curves.values() for t in c if t.startswith("eval/") and t.endswith("pass@1")})
    tags = tags or ["train/loss"]
    fig, axes = plt.subplots(1, len(tags), figsize=(6 * len(tags), 4.5), squeeze=False)
    for ax, tag in zip(axes[0], tags, strict=True):
        for slug, logged in curves.items():
            if series := logged.get(tag):
                ax.plot(list(series), list(series.values()), label=slug, marker="." if len(series) < 30 else None)
        ax.set(title=tag, xlabel="step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phi1.sweep", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start every point not done yet (resuming the unfinished)")
    run.add_argument("sweep", help="the sweep YAML")
    run.add_argument("--executor", choices=["local", "slurm"], default="local")
    run.add_argument("--dry-run", action="store_true", help="print the commands (and the sbatch script), run nothing")
    run.add_argument("--sbatch", default="", help='extra sbatch options, e.g. --sbatch="--time=1-00:00:00 -p gpu"')
    rep = commands.add_parser("report", help="Markdown table on stdout, report.csv and curves.png")
    rep.add_argument("sweep", help="the sweep YAML")
    rep.add_argument("--out", help="folder for report.csv and curves.png (default: the sweep's run folder)")
    point = commands.add_parser("point", help="run one point under srun (what each SLURM array task does)")
    point.add_argument("sweep", help="the sweep YAML")
    point.add_argument("index", type=int)
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.sweep)
        if args.command == "point":
            start_point(sweep, args.index)
            return 0
        plans = [plan(sweep, p) for p in grid_points(sweep)]
        if args.command == "run" and args.executor == "local":
            return run_local(sweep, plans, args.dry_run)
        if args.command == "run":
            return run_slurm(sweep, plans, args.dry_run, shlex.split(args.sbatch))
        rows, curves = report(sweep, plans)
        out = Path(args.out) if args.out else plans[0].run_dir.parent
        out.mkdir(parents=True, exist_ok=True)
        print(markdown_table(rows))
        with open(out / "report.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns(rows))
            writer.writeheader()
            writer.writerows(rows)
        plot_curves(curves, out / "curves.png")
        print(f"wrote {out / 'report.csv'} and {out / 'curves.png'}", file=sys.stderr)
        return 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: running the same command again resumes the sweep", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
