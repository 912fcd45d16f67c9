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


def test_fit_of_the_tiny_config_through_the_cli_lowers_the_loss(tmp_path, code_shards, run_python, repo_root):
    tiny = str(repo_root / "experiments" / "tiny.yaml")
    run_python("-m", "phi1.cli", "fit", "--config", tiny, "--config", overlay(tmp_path, code_shards))
    run = tmp_path / "runs" / "tiny" / "version_0"
    loss = scalars(run, "train/loss")
    assert len(loss) == 4 and loss[-1] < loss[0] - 0.5  # nats
    assert scalars(run, "val/loss")[-1] < scalars(run, "val/loss")[0]
    assert len(scalars(run, "throughput/tokens_per_sec")) > 0 and len(scalars(run, "train/grad_norm")) > 0
    assert len(scalars(run, "lr-AdamW/pg1")) > 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["config"]["preset"] == "tiny" and saved["model"]["config"]["block_size"] == 64
    resolved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]["config"]
    assert (resolved["n_layer"], resolved["n_embd"], resolved["block_size"]) == (4, 128, 64)
    # a run continued in the same log folder does not trip over its saved config.yaml
    same_folder = {"init_args": {"save_dir": str(tmp_path / "runs"), "version": 0}}
    again = overlay(tmp_path, code_shards, steps=50, logger=same_folder)
    run_python(
        "-m",
        "phi1.cli",
        "fit",
        "--config",
        tiny,
        "--config",
        again,
        "--ckpt_path",
        str(run / "checkpoints" / "last.ckpt"),
    )
    assert len(scalars(run, "train/loss")) == 5


def test_print_config_shows_the_whole_run(run_python, repo_root):
    out = run_python(
        "-m", "phi1.cli", "fit", "--config", str(repo_root / "experiments" / "phi1.yaml"), "--print_config"
    )
    config = yaml.safe_load(out.stdout)
    assert config["model"]["optimizer"]["init_args"]["lr"] == 1e-3
    assert (
        config["trainer"]["accumulate_grad_batches"]
        * config["trainer"]["devices"]
        * config["data"]["init_args"]["batch_size"]
        == 1024
    )


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--model.config.n_layers=3", "n_layers"),
        ("--model.config.n_layer=three", "n_layer"),
        ("--data.init_args.seq_len=long", "seq_len"),
        ("--trainer.max_stepz=3", "max_stepz"),
    ],
)
def test_bad_config_key_or_value_is_a_clear_error(run_python, repo_root, arg, message):
    out = run_python(
        "-m",
        "phi1.cli",
        "fit",
        "--config",
        str(repo_root / "experiments" / "tiny.yaml"),
        arg,
        "--print_config",
        check=False,
    )
    assert out.returncode != 0
    assert message in out.stderr


def test_finetune_overlay_matches_the_paper_and_inherits_the_rest(run_python, repo_root):
    experiments = repo_root / "experiments"
    out = run_python(
        "-m",
        "phi1.cli",
        "fit",
        "--config",
        str(experiments / "phi1.yaml"),
        "--config",
        str(experiments / "phi1-finetune.yaml"),
        "--print_config",
    )
    config = yaml.safe_load(out.stdout)
    t, m, d = config["trainer"], config["model"], config["data"]["init_args"]
    assert t["devices"] * t["accumulate_grad_batches"] * d["batch_size"] == 256
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
