import logging
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def overlay(tmp_path, code_shards, steps=40, **trainer):
    """An extra --config over experiments/tiny.yaml: the test's shards, a short run, logs under tmp_path."""
    config = {
        "trainer": {
            "max_steps": steps,
            "val_check_interval": 20,
            "enable_progress_bar": False,
            "logger": {"init_args": {"save_dir": str(tmp_path / "runs")}},
            **trainer,
        },
        "model": {"config": {"block_size": 64}, "scheduler": {"init_args": {"warmup_steps": 5}}},
        "data": {"init_args": {"sources": {str(code_shards): 1.0}, "seq_len": 64, "num_workers": 0}},
    }
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def scalars(run_dir, tag):
    events = EventAccumulator(str(run_dir)).Reload()
    return [e.value for e in events.Scalars(tag)]


def test_fit_of_the_tiny_config_through_the_cli_lowers_the_loss(
    tmp_path, code_shards, run_python, repo_root, monkeypatch, capsys
):
    tiny = str(repo_root / "experiments" / "tiny.yaml")
    run_python("-m", "phi1.cli", "fit", "--config", tiny, "--config", overlay(tmp_path, code_shards))
    run = tmp_path / "runs" / "tiny"  # the run's folder is its name: no version_N per launch
    loss = scalars(run, "train/loss")
    assert len(loss) == 4 and loss[-1] < loss[0] - 0.5  # nats
    assert scalars(run, "val/loss")[-1] < scalars(run, "val/loss")[0]
    assert len(scalars(run, "val/loss/code")) == len(scalars(run, "val/loss")) == 2  # per source, by folder name
    assert len(scalars(run, "throughput/tokens_per_sec")) > 0 and len(scalars(run, "train/grad_norm")) > 0
    assert len(scalars(run, "lr-AdamW/pg1")) > 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["config"]["preset"] == "tiny" and saved["model"]["config"]["block_size"] == 64
    resolved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]["config"]
    assert (resolved["n_layer"], resolved["n_embd"], resolved["block_size"]) == (4, 128, 64)
    # `--ckpt_path last` continues the run in its folder, keeping the first launch's config.yaml
    first_config = (run / "config.yaml").read_text()
    cut = run / "checkpoints" / "last-v1.ckpt"  # a save cut short by a kill is passed over, not loaded
    cut.write_bytes((run / "checkpoints" / "last.ckpt").read_bytes()[:4096])
    again = overlay(tmp_path, code_shards, steps=50)
    assert cli(monkeypatch, capsys, "fit", "--config", tiny, "--config", again, "--ckpt_path", "last")[0] == 0
    assert len(scalars(run, "train/loss")) == 5
    assert (run / "config.yaml").read_text() == first_config
    assert yaml.safe_load((run / "config-1.yaml").read_text())["trainer"]["max_steps"] == 50
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny"]
    # a launch without --ckpt_path into the run's folder, or a resume that changes the model, is refused
    again = ("--config", tiny, "--config", overlay(tmp_path, code_shards, steps=60))
    assert "already holds checkpoints" in cli_error(monkeypatch, capsys, *again)
    line = cli_error(monkeypatch, capsys, *again, "--ckpt_path", "last", "--model.config.resid_dropout=0.1")
    assert "model.config.resid_dropout is 0.1 here but 0.0 in the checkpoint" in line
    assert len(scalars(run, "train/loss")) == 5 and not (run / "config-2.yaml").exists()


def test_print_config_shows_the_whole_run(monkeypatch, capsys, repo_root):
    paper = str(repo_root / "experiments" / "phi1.yaml")
    code, out, _ = cli(monkeypatch, capsys, "fit", "--config", paper, "--print_config")
    assert code == 0
    config = yaml.safe_load(out)
    assert config["model"]["optimizer"]["init_args"]["lr"] == 1e-3
    assert config["global_batch_size"] == 1024  # the accumulation follows from it (tests/test_parallel.py)


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--model.config.n_layers=3", "n_layers"),
        ("--model.config.n_layer=three", "n_layer"),
        ("--data.init_args.seq_len=long", "seq_len"),
        ("--trainer.max_stepz=3", "max_stepz"),
    ],
)
def test_bad_config_key_or_value_is_a_clear_error(monkeypatch, capsys, repo_root, arg, message):
    tiny = str(repo_root / "experiments" / "tiny.yaml")
    code, _, err = cli(monkeypatch, capsys, "fit", "--config", tiny, arg, "--print_config")
    assert code != 0
    assert message in err


def test_finetune_overlay_matches_the_paper_and_inherits_the_rest(monkeypatch, capsys, repo_root):
    experiments = repo_root / "experiments"
    paper, finetune = str(experiments / "phi1.yaml"), str(experiments / "phi1-finetune.yaml")
    code, out, _ = cli(monkeypatch, capsys, "fit", "--config", paper, "--config", finetune, "--print_config")
    assert code == 0
    config = yaml.safe_load(out)
    t, m, d = config["trainer"], config["model"], config["data"]["init_args"]
    assert config["global_batch_size"] == 256 and t["accumulate_grad_batches"] == 1  # derived at start-up
    assert m["optimizer"]["init_args"]["lr"] == 1e-4 and m["optimizer"]["init_args"]["weight_decay"] == 0.01
    assert m["scheduler"]["init_args"]["warmup_steps"] == 50 and t["max_steps"] == 6000
    assert d["sources"] == {"data/codeexercises": 1.0}
    # what the overlay does not restate comes from the pretraining recipe
    assert m["config"]["preset"] == "phi-1" and m["config"]["attn_dropout"] == m["config"]["resid_dropout"] == 0.1
    assert t["precision"] == "bf16-mixed" and t["gradient_clip_val"] == 1.0
    assert [c["class_path"] for c in t["callbacks"]] == [
        "phi1.callbacks.StepCheckpoint",
        "lightning.pytorch.callbacks.LearningRateMonitor",
        "phi1.callbacks.TokenThroughput",
    ]


def test_the_paper_config_without_its_data_says_what_is_missing_and_how_to_build_it(run_python, repo_root):
    out = run_python(
        "-m", "phi1.cli", "fit", "--config", str(repo_root / "experiments" / "phi1.yaml"), check=False,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: data.sources: shard folder data/codetextbook/filtered_code does not exist")
    assert "python -m data_prep.build_shards" in last
    assert "GPU available" not in out.stderr  # reported before the Trainer (and any process group) is made


def cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`python -m phi1.cli ARGS` run in this process (`phi1.cli.main`): (exit status, stdout, stderr)."""
    from phi1.cli import main

    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):  # set by seed_everything; unset again afterwards (a delenv
        monkeypatch.setenv(name, "")  # of an absent variable alone records nothing to undo)
        monkeypatch.delenv(name)
    for logger in ("lightning", "lightning.pytorch", "lightning.fabric"):  # handlers keep the first test's stderr
        for handler in logging.getLogger(logger).handlers:
            if isinstance(handler, logging.StreamHandler):
                monkeypatch.setattr(handler, "stream", sys.stderr)
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def cli_error(monkeypatch, capsys, *args) -> str:
    """`cli(["fit", *args])`; it must exit 2 with one `error:` line and no traceback."""
    code, _, err = cli(monkeypatch, capsys, "fit", *args)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def fit_error(monkeypatch, capsys, tmp_path, code_shards, *args) -> str:
    """`cli_error` on tiny.yaml with the test's shards; the failed launch must leave no run folder."""
    tiny = str(Path(__file__).parents[1] / "experiments" / "tiny.yaml")
    line = cli_error(monkeypatch, capsys, "--config", tiny, "--config", overlay(tmp_path, code_shards, steps=4), *args)
    assert not (tmp_path / "runs" / "tiny").exists()
    return line


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data.init_args.batch_size=0"], "data.batch_size=0: must be an integer of at least 1"),
        (["--data.init_args.seq_len=0"], "data.seq_len=0: must be an integer of at least 1"),
        (["--model.config.n_layer=-1"], "model.config.n_layer=-1: must be a positive integer"),
        (["--model.scheduler.init_args.warmup_steps=100"], "warmup_steps"),  # fails inside fit, after set-up
        (["--ckpt_path", "last"], "holds no last checkpoint"),
        (["--ckpt_path", "nowhere.ckpt"], "--ckpt_path nowhere.ckpt: no such file"),
    ],
)
def test_bad_fit_input_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, code_shards, args, message):
    assert message in fit_error(monkeypatch, capsys, tmp_path, code_shards, *args)


def test_an_infinite_mixing_weight_is_refused(monkeypatch, capsys, tmp_path, code_shards):
    sources = f"--data.init_args.sources={{{code_shards}: .inf}}"
    line = fit_error(monkeypatch, capsys, tmp_path, code_shards, sources)
    assert f"data.sources[{str(code_shards)!r}]: weight inf must be a positive finite number" in line


def test_ckpt_path_that_is_no_training_checkpoint_is_refused(monkeypatch, capsys, tmp_path, code_shards):
    from phi1.checkpoint import save_model
    from phi1.model import Phi, PhiConfig

    weights = save_model(Phi(PhiConfig.from_name("tiny", block_size=64)), tmp_path / "weights.ckpt")
    line = fit_error(monkeypatch, capsys, tmp_path, code_shards, "--ckpt_path", str(weights))
    assert "holds model weights only" in line and f"--model.init_from {weights}" in line
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    line = fit_error(monkeypatch, capsys, tmp_path, code_shards, "--ckpt_path", str(text))
    assert f"--ckpt_path {text}: not a readable checkpoint" in line
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(weights.read_bytes()[:5000])
    line = fit_error(monkeypatch, capsys, tmp_path, code_shards, "--ckpt_path", str(truncated))
    assert f"--ckpt_path {truncated}: not a readable checkpoint" in line


def test_init_from_that_is_missing_or_of_another_architecture_is_one_line(monkeypatch, capsys, tmp_path, code_shards):
    from phi1.checkpoint import save_model
    from phi1.model import Phi, PhiConfig

    missing = tmp_path / "nowhere.ckpt"
    line = fit_error(monkeypatch, capsys, tmp_path, code_shards, "--model.init_from", str(missing))
    assert line.startswith(f"error: model.init_from={missing}: checkpoint {missing} not found")
    other = save_model(Phi(PhiConfig.from_name("tiny", block_size=64, n_layer=2)), tmp_path / "two-layers.ckpt")
    line = fit_error(monkeypatch, capsys, tmp_path, code_shards, "--model.init_from", str(other))
    assert f"model.init_from={other}: architecture differs from model.config (n_layer: 2 there, 4 here)" in line


class FailAtStep(L.Callback):
    """A bug that strikes once `step` optimizer steps are done."""

    def __init__(self, step: int = 2):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError(f"a bug at step {self.step}")


def test_a_run_that_trained_then_failed_before_its_first_checkpoint_keeps_its_logs(
    monkeypatch, capsys, tmp_path, code_shards
):
    tiny = str(Path(__file__).parents[1] / "experiments" / "tiny.yaml")
    config = overlay(tmp_path, code_shards, steps=8, log_every_n_steps=1)
    with pytest.raises(RuntimeError, match="a bug at step 2"):
        cli(
            monkeypatch, capsys, "fit", "--config", tiny, "--config", config, "--trainer.callbacks+=test_cli.FailAtStep"
        )
    run = tmp_path / "runs" / "tiny"
    assert not list(run.rglob("*.ckpt")) and len(scalars(run, "train/loss")) == 1  # step 1's curve is still there


def test_a_requeued_run_whose_checkpoints_cannot_be_read_stops_instead_of_starting_over(
    monkeypatch, capsys, tmp_path, code_shards
):
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    (run / "hpc_ckpt_1.ckpt").write_bytes(b"PK\x03\x04 cut short by the kill at the time limit")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    tiny = str(Path(__file__).parents[1] / "experiments" / "tiny.yaml")
    line = cli_error(monkeypatch, capsys, "--config", tiny, "--config", overlay(tmp_path, code_shards, steps=4))
    assert f"requeued run: the run folder {run} holds checkpoints ({run / 'hpc_ckpt_1.ckpt'}, ...)" in line
    assert sorted(p.name for p in run.iterdir()) == ["hpc_ckpt_1.ckpt"]  # nothing trained or written there


def test_a_deepspeed_checkpoint_folder_is_found_by_its_step(tmp_path):
    """Lightning's DeepSpeedStrategy saves a checkpoint as a folder: DeepSpeed's `save_checkpoint(path,
    client_state=<Lightning's checkpoint without state_dict and optimizer_states>, tag="checkpoint")`."""
    from phi1.cli import newest_checkpoint

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"global_step": 4, "loops": {}}, run / "checkpoints" / "last.ckpt")
    states = run / "hpc_ckpt_1.ckpt" / "checkpoint" / "mp_rank_00_model_states.pt"
    states.parent.mkdir(parents=True)
    deepspeed_state = {"module": {"w": torch.zeros(2)}, "csr_tensor_module_names": set()}
    torch.save({**deepspeed_state, "global_step": 6, "loops": {}}, states)
    (run / "hpc_ckpt_1.ckpt" / "latest").write_text("checkpoint")
    assert newest_checkpoint(run) == run / "hpc_ckpt_1.ckpt"
