"""The command line: `PhiCLI`, a LightningCLI over `PhiLitModule` and any LightningDataModule named in the YAML.

    python -m phi1.cli fit --config experiments/phi1.yaml
    python -m phi1.cli fit --config experiments/phi1.yaml --print_config   # the whole run, resolved
    python -m phi1.cli fit --config experiments/phi1.yaml --ckpt_path last  # resume the run

A run lives in one folder named by its run name, `<save_dir>/<name>` of `trainer.logger` (`runs/phi1-base`):
TensorBoard logs, `checkpoints/`, Lightning's SLURM `hpc_ckpt_N.ckpt` (`trainer.default_root_dir` is the same
folder) and the config of each launch (`config.yaml`, then `config-1.yaml` ... for each resume). A launch
into a folder that already holds checkpoints must say `--ckpt_path` (`last` is the run's newest checkpoint,
last or hpc) and nothing is overwritten; a SLURM requeue (an hpc checkpoint there, or SLURM_RESTART_COUNT > 0)
resumes from the newest by itself (and stops, rather than start over, when it can read none of them). Under
DeepSpeed a checkpoint is a folder of the same name. A resume keeps the checkpoint's model: a model.config that
differs from it is refused, naming the field.

A user's mistake (`phi1.errors.ConfigError`: a setting, flag or input file that cannot be used) is reported
as one line, `error: <message>`, with exit status 2; a bug keeps its traceback. A launch that fails before
training leaves no run folder behind.
"""

import os
import shutil
import sys
from dataclasses import asdict, fields
from pathlib import Path

import torch
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info

from phi1.callbacks import ExactResume
from phi1.errors import ConfigError
from phi1.model import PhiConfig
from phi1.module import PhiLitModule


class SaveLaunchConfig(SaveConfigCallback):
    """Saves each launch's resolved config in the run folder: `config.yaml`, then `config-1.yaml`, ..."""

    def setup(self, trainer, pl_module, stage):
        if self.already_saved:
            return
        name, log_dir, n = None, Path(trainer.log_dir), 0  # log_dir broadcasts: every rank must ask for it
        if trainer.is_global_zero:
            while (log_dir / (name := "config.yaml" if n == 0 else f"config-{n}.yaml")).exists():
                n += 1
        self.config_filename = trainer.strategy.broadcast(name)
        super().setup(trainer, pl_module, stage)


def read_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint's contents with its tensors memory-mapped, none read: a file, or the folder Lightning's
    DeepSpeedStrategy writes, whose Lightning state (all but weights and optimizer) is in DeepSpeed's model-states
    file beside the weights."""
    path = Path(path)
    if not path.is_dir():
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    states = sorted((path / "checkpoint").glob("*mp_rank_00_model_states.pt"))  # tag "checkpoint": Lightning's
    if not states:
        raise FileNotFoundError(f"{path} is a folder without DeepSpeed's checkpoint/mp_rank_00_model_states.pt")
    # DeepSpeed stores Python objects beside the tensors (its config, sets of names), as Lightning loads it
    return torch.load(states[0], map_location="cpu", mmap=True, weights_only=False)


def checkpoint_step(path: Path) -> int | None:
    """The global step a checkpoint holds, reading no tensors; None for a file cut short or not a checkpoint."""
    try:
        return int(read_checkpoint(path)["global_step"])
    except Exception:
        rank_zero_info(f"skipping {path}: not a readable checkpoint")
        return None


def newest_checkpoint(run_dir: Path, pattern: str = "last*.ckpt") -> Path | None:
    """The most advanced of the run's `hpc_ckpt_N.ckpt` and `pattern` checkpoints (by global step, then time)."""
    found = [*run_dir.glob("hpc_ckpt_*.ckpt"), *(run_dir.rglob(pattern) if pattern else [])] if run_dir.is_dir() else []
    steps = [(step, p.stat().st_mtime, p) for p in found if (step := checkpoint_step(p)) is not None]
    return max(steps, key=lambda s: s[:2], default=(None, None, None))[2]


def run_folder(save_dir: str, name: str | None, version: int | str | None) -> Path:
    """A logger's folder, `<save_dir>/<name>/<version>` (`version_N` for an integer version), as Lightning's
    TensorBoard and CSV loggers place it."""
    version = f"version_{version}" if isinstance(version, int) else version or ""
    return Path(save_dir) / str(name or "") / version


def launched_child() -> bool:
    """A process Lightning's launcher started for rank > 0 (it reruns this command line)."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


class PhiCLI(LightningCLI):
    """LightningCLI with phi1's model class, stable run folders, checked resumes and one-line errors."""

    def __init__(self, args=None, **kwargs):
        kwargs.setdefault("save_config_callback", SaveLaunchConfig)
        self.run_dir, self.new_run_dir = None, False
        super().__init__(PhiLitModule, subclass_mode_data=True, args=args, **kwargs)

    def parse_arguments(self, parser, args):
        super().parse_arguments(parser, args)
        if self.config.get("subcommand") == "fit" and not self.config.fit.get("print_config"):
            self.place_run(self.config.fit)

    def place_run(self, config):
        """Fix the run folder (`<save_dir>/<name>`, no `version_N` per launch) and resolve `--ckpt_path`."""
        trainer = config.trainer
        loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
        named = [lg for lg in loggers if hasattr(lg, "init_args") and lg.init_args.get("save_dir") is not None]
        for logger in named:
            if "version" in logger.init_args and logger.init_args.version is None:
                logger.init_args.version = ""
        if named:
            args = named[0].init_args
            self.run_dir = run_folder(args.save_dir, args.get("name"), args.get("version"))
            trainer.default_root_dir = str(self.run_dir)
        else:
            self.run_dir = Path(trainer.default_root_dir or os.getcwd())
        self.new_run_dir = not self.run_dir.exists()

        ckpt = config.ckpt_path
        requeued = any(self.run_dir.glob("hpc_ckpt_*.ckpt")) or int(os.environ.get("SLURM_RESTART_COUNT", 0)) > 0
        if ckpt in ("last", "hpc") or (ckpt is None and requeued):
            found = newest_checkpoint(self.run_dir, "" if ckpt == "hpc" else "last*.ckpt")
            held = sorted(self.run_dir.rglob("*.ckpt")) if self.run_dir.is_dir() else []
            if found is None and ckpt is not None:
                raise ConfigError(f"--ckpt_path {ckpt}: the run folder {self.run_dir} holds no {ckpt} checkpoint")
            if found is None and held:  # a requeued run must not start over beside checkpoints it cannot read
                raise ConfigError(
                    f"requeued run: the run folder {self.run_dir} holds checkpoints ({held[-1]}, ...) but no readable "
                    "hpc or last one; resume one with --ckpt_path, or move them away to start over"
                )
            if found is not None:
                rank_zero_info(f"resuming {self.run_dir} from {found}")
                config.ckpt_path = str(found)
        elif ckpt is None and not launched_child():
            held = sorted(self.run_dir.rglob("*.ckpt")) if self.run_dir.is_dir() else []
            if held:
                raise ConfigError(
                    f"the run folder {self.run_dir} already holds checkpoints ({held[-1]}, ...): resume it with "
                    "--ckpt_path last, or give the new run another name (--trainer.logger.init_args.name)"
                )
        elif ckpt is not None and not Path(ckpt).exists():
            raise ConfigError(f"--ckpt_path {ckpt}: no such file")

    def _parse_ckpt_path(self):
        """Lightning would load the checkpoint's hyperparameters over the command line's; on `fit` the command
        line stays, a model.config that differs from the checkpoint's is refused, and other differences said.
        (LightningCLI calls this private method right after parsing, and has no public hook in its place.)"""
        if self.config.get("subcommand") != "fit":
            return super()._parse_ckpt_path()
        path = self.config.fit.get("ckpt_path")
        if not path:
            return
        try:
            ckpt = read_checkpoint(path)
        except Exception as error:  # truncated, not a torch file, or not ours
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ConfigError(
                f"--ckpt_path {path}: not a readable checkpoint ({type(error).__name__}: {first[:200]})"
            ) from None
        deepspeed = Path(path).is_dir()  # weights and optimizer state in DeepSpeed's own files
        if not isinstance(ckpt, dict) or not (deepspeed or "state_dict" in ckpt):
            raise ConfigError(f"--ckpt_path {path}: not a Lightning checkpoint (no state_dict)")
        if "loops" not in ckpt or not (deepspeed or "optimizer_states" in ckpt):
            raise ConfigError(
                f"--ckpt_path {path} holds model weights only (no optimizer or loop state), so there is no run to "
                f"resume; start a new run from them with --model.init_from {path}"
            )
        saved = ckpt.get("hyper_parameters", {})
        if "config" not in saved:
            return
        model = self.config.fit.model
        here = asdict(PhiConfig(**{k: v for k, v in vars(model.config).items() if not k.startswith("__")}))
        there = asdict(PhiConfig(**saved["config"]))
        differ = [f.name for f in fields(PhiConfig) if f.compare and here[f.name] != there[f.name]]
        if differ:
            detail = ", ".join(f"model.config.{n} is {here[n]} here but {there[n]} in the checkpoint" for n in differ)
            raise ConfigError(
                f"--ckpt_path {path}: {detail}; a resume continues the checkpoint's model: drop the change, or "
                f"start a new run from its weights with --model.init_from {path}"
            )
        for name, value in saved.items():
            if name != "config" and name in model and model[name] != value:
                rank_zero_info(f"resume: model.{name}={model[name]!r} (the checkpoint's run had {value!r})")

    def instantiate_trainer(self, **kwargs):
        if self.subcommand == "fit" and hasattr(self.datamodule, "open_sources"):
            self.datamodule.open_sources()  # missing or broken data is reported first, before any Trainer or model
        trainer = super().instantiate_trainer(**kwargs)
        if self.subcommand == "fit" and not any(isinstance(c, ExactResume) for c in trainer.callbacks):
            trainer.callbacks.insert(0, ExactResume())
        return trainer

    def add_arguments_to_parser(self, parser):
        parser.add_argument(
            "--global_batch_size",
            type=int | None,
            default=None,
            help="Sequences per optimizer step over all devices (paper §2.3: 1024 pretraining, 256 finetuning). "
            "Sets trainer.accumulate_grad_batches to global_batch_size / (num_nodes × devices × data batch_size), "
            "so the batch holds on any number of devices; a layout that does not divide it is refused.",
        )

    def after_instantiate_classes(self):
        self.accumulate_to_global_batch()

    def accumulate_to_global_batch(self):
        """Derive the gradient accumulation from `global_batch_size` and the Trainer's devices, before any
        strategy reads it (DeepSpeed copies it into its own config at setup)."""
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False has no subcommand
        size = config.get("global_batch_size")
        if size is None:
            return
        trainer, micro = self.trainer, getattr(self.datamodule, "batch_size", None)
        if not isinstance(micro, int):
            raise ConfigError("global_batch_size: the DataModule has no integer batch_size to derive accumulation")
        per_micro_step = trainer.num_nodes * trainer.num_devices * micro
        if size < 1 or size % per_micro_step:
            raise ConfigError(
                f"global_batch_size={size} is not a multiple of num_nodes {trainer.num_nodes} × devices "
                f"{trainer.num_devices} × data batch_size {micro} = {per_micro_step}: change data.init_args.batch_size "
                "or the devices so that their product divides it"
            )
        accumulate = size // per_micro_step
        given = config.trainer.accumulate_grad_batches
        if given not in (1, accumulate):
            raise ConfigError(
                f"trainer.accumulate_grad_batches={given} contradicts global_batch_size={size}, which needs "
                f"{accumulate} on this layout: leave accumulate_grad_batches out"
            )
        trainer.accumulate_grad_batches = accumulate

    def fit(self, model, **kwargs):
        """`trainer.fit` (LightningCLI runs a subcommand through the CLI's method of that name when it has one);
        a launch that fails before training removes the run folder it made."""
        try:
            self.trainer.fit(model, **kwargs)
        except BaseException:
            self.remove_failed_run()
            raise

    def remove_failed_run(self):
        """Remove the run folder this launch made if it holds only what start-up wrote (the config, logs of no
        step): the launch took no optimizer step and saved no checkpoint. A run that trained keeps its logs."""
        if self.run_dir is None or not self.new_run_dir or launched_child() or not self.run_dir.is_dir():
            return
        if self.trainer.global_step == 0 and not any(self.run_dir.rglob("*.ckpt")):
            shutil.rmtree(self.run_dir, ignore_errors=True)


def user_error(error: BaseException) -> ConfigError | None:
    """The ConfigError behind an exception: itself, or the cause jsonargparse wraps when it instantiates a
    class (`data.init_args...`) and reports 'Does not validate against any of the Union subtypes'."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ConfigError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def one_line(error: ConfigError) -> str:
    """The message; from a DataLoader worker, torch re-raises it with the worker's traceback prepended."""
    message = str(error)
    if message.startswith("Caught "):
        message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return message


def main(args=None):
    try:
        PhiCLI(args=args)
    except Exception as error:
        if (cause := user_error(error)) is None:
            raise
        print(f"error: {one_line(cause)}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if torch.distributed.is_initialized():  # gloo's threads outliving the interpreter abort the process
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
