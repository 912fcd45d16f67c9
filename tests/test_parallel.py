"""Strategies (experiments/strategies/), the global batch, and what the module does under them
(phi1/parallel.py): DDP through the real CLI on CPU; FSDP and DeepSpeed need CUDA and are marked."""

import sys

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.strategies import Strategy
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from phi1.cli import PhiCLI, main
from phi1.errors import ConfigError
from phi1.model import Block, Phi, PhiConfig
from phi1.module import PhiLitModule


def overlay(tmp_path, shards, name="overlay", **settings) -> str:
    """An extra --config over experiments/tiny.yaml: 4 sequences of 64 tokens per optimizer step in micro-batches
    of 2, dropout 0 (tiny.yaml), no validation, the loss and gradient norm logged every step."""
    config = {
        "global_batch_size": 4,
        "trainer": {
            "max_steps": 4,
            "log_every_n_steps": 1,
            "limit_val_batches": 0,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {"init_args": {"save_dir": str(tmp_path / "runs")}},
        },
        "model": {"config": {"block_size": 64}, "scheduler": {"init_args": {"warmup_steps": 2}}},
        "data": {"init_args": {"sources": {str(shards): 1.0}, "seq_len": 64, "batch_size": 2, "num_workers": 0}},
    }
    for key, value in settings.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def curves(run_dir) -> dict[str, list[float]]:
    events = EventAccumulator(str(run_dir)).Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in ("train/loss", "train/grad_norm")}


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(next(run_dir.rglob("last.ckpt")), map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow  # two interpreter starts and a gloo process group: ~20 s on 2 idle cores
def test_two_process_ddp_equals_one_process_with_the_same_global_batch(
    tmp_path, code_shards, run_python, repo_root, monkeypatch
):
    """1 process accumulating 2 micro-batches vs 2 gloo processes of 1 micro-batch each: the same 4 sequences per
    step (global_batch_size), so the same loss and gradient-norm curves and weights, up to float summation order.
    The 2-process run is the real command line; the reference runs the same CLI in this process."""
    tiny, ddp = str(repo_root / "experiments/tiny.yaml"), str(repo_root / "experiments/strategies/ddp.yaml")
    monkeypatch.setattr(sys, "argv", ["phi1.cli"])
    one = ["--config", tiny, "--config", overlay(tmp_path, code_shards), "--trainer.logger.init_args.name", "one"]
    main(["fit", *one])
    two = ["--config", ddp, "--trainer.devices", "2", "--trainer.logger.init_args.name", "two"]
    run_python("-m", "phi1.cli", "fit", "--config", tiny, "--config", overlay(tmp_path, code_shards), *two)

    single, distributed = curves(tmp_path / "runs/one"), curves(tmp_path / "runs/two")
    assert len(single["train/loss"]) == len(single["train/grad_norm"]) == 4
    for tag in single:
        torch.testing.assert_close(distributed[tag], single[tag], rtol=2e-6, atol=0)
    saved = yaml.safe_load((tmp_path / "runs/two/config.yaml").read_text())
    assert saved["trainer"]["strategy"]["class_path"] == "lightning.pytorch.strategies.DDPStrategy"
    a, b = final_weights(tmp_path / "runs/one"), final_weights(tmp_path / "runs/two")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6)


def cli(tmp_path, shards, *args) -> PhiCLI:
    """The CLI's objects for tiny.yaml + the overlay, without running (`run=False`)."""
    return PhiCLI(args=["--config", "experiments/tiny.yaml", "--config", overlay(tmp_path, shards), *args], run=False)


def test_accumulation_follows_the_global_batch_on_any_device_count(tmp_path, code_shards, repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    monkeypatch.setattr(sys, "argv", ["phi1.cli"])
    for devices, batch_size, accumulate in [(1, 2, 2), (2, 2, 1), (1, 1, 4), (4, 1, 1)]:
        trainer = cli(
            tmp_path, code_shards, f"--trainer.devices={devices}", f"--data.init_args.batch_size={batch_size}"
        )
        trainer = trainer.trainer
        assert trainer.accumulate_grad_batches == accumulate
        assert trainer.num_devices * batch_size * trainer.accumulate_grad_batches == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--trainer.devices=3"],
            r"global_batch_size=4 is not a multiple of num_nodes 1 × devices 3 × data batch_size 2",
        ),
        (["--trainer.accumulate_grad_batches=4"], "trainer.accumulate_grad_batches=4 contradicts global_batch_size=4"),
    ],
)
def test_a_layout_that_breaks_the_global_batch_is_refused(tmp_path, code_shards, repo_root, monkeypatch, args, message):
    monkeypatch.chdir(repo_root)
    monkeypatch.setattr(sys, "argv", ["phi1.cli"])
    with pytest.raises(ConfigError, match=message):
        cli(tmp_path, code_shards, *args)


def strategy_of(overlay_file, **init_args) -> Strategy:
    """The strategy object an overlay's trainer.strategy becomes (jsonargparse, as LightningCLI builds it)."""
    spec = yaml.safe_load(overlay_file.read_text())["trainer"]["strategy"]
    spec["init_args"].update(init_args)
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    return parser.instantiate_classes(parser.parse_object({"strategy": spec})).strategy


def test_strategy_overlays_stack_on_the_paper_config(repo_root, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    monkeypatch.setattr(sys, "argv", ["phi1.cli"])
    classes = {"ddp": "DDPStrategy", "fsdp": "FSDPStrategy", "deepspeed_stage_2": "DeepSpeedStrategy"}
    for name, cls in classes.items():
        args = ["fit", "--config", "experiments/phi1.yaml", "--config", f"experiments/strategies/{name}.yaml"]
        with pytest.raises(SystemExit) as exit:
            PhiCLI(args=[*args, "--print_config"])
        assert exit.value.code == 0
        config = yaml.safe_load(capsys.readouterr().out)
        assert config["trainer"]["strategy"]["class_path"] == f"lightning.pytorch.strategies.{cls}"
        assert config["global_batch_size"] == 1024 and config["trainer"]["precision"] == "bf16-mixed"


def test_fsdp_overlay_wraps_each_block_and_keeps_fp32_numerics(repo_root):
    from torch.distributed.fsdp import ShardingStrategy

    fsdp = repo_root / "experiments/strategies/fsdp.yaml"
    strategy = strategy_of(fsdp)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert strategy.sharding_strategy == ShardingStrategy.FULL_SHARD and strategy.kwargs["use_orig_params"]
    mp = strategy.mixed_precision  # no casts: fp32 weights and gradient reduction, bf16 matmuls by autocast
    assert (mp.param_dtype, mp.reduce_dtype, mp.buffer_dtype) == (None, None, None)
    assert strategy._activation_checkpointing_kwargs == {}
    checkpointed = strategy_of(fsdp, activation_checkpointing_policy=["phi1.model.Block"])
    assert checkpointed._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {Block}
    bf16 = {"class_path": "torch.distributed.fsdp.MixedPrecision", "init_args": {"param_dtype": "torch.bfloat16"}}
    halved = strategy_of(fsdp, mixed_precision=bf16)  # the overlay's comment: half the all-gather traffic
    assert halved.mixed_precision.param_dtype == torch.bfloat16


def test_activation_checkpointing_gives_the_same_loss_gradients_and_state_dict_keys():
    config = PhiConfig.from_name("tiny", vocab_size=96, block_size=32, n_layer=2, resid_dropout=0.1)
    batch = {"tokens": torch.randint(0, 96, (2, 33), generator=torch.Generator().manual_seed(1))}
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        module = PhiLitModule(config, activation_checkpointing=checkpointing)
        module.configure_model()
        torch.manual_seed(1)  # the same dropout masks: the recomputation replays the forward's RNG state
        loss, _ = module.loss(batch)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in module.parameters()], module.state_dict().keys()))
    (plain, g_plain, keys_plain), (checkpointed, g_checkpointed, keys_checkpointed) = results
    assert keys_checkpointed == keys_plain  # checkpoints load either way
    torch.testing.assert_close(checkpointed, plain, rtol=0, atol=0)
    for a, b in zip(g_plain, g_checkpointed, strict=True):
        torch.testing.assert_close(b, a)


def test_activation_estimate_of_describe_matches_what_autograd_keeps():
    """`phi1.costs.training_costs` counts 24C + 4M bytes per token per block under bf16 autocast; measure what a
    block keeps for backward on CPU (fused attention, no attention dropout)."""
    C, M, T, B = 256, 1024, 96, 2
    config = PhiConfig.from_name("tiny", block_size=T, n_layer=1, n_embd=C, mlp_dim=M, n_head=4, resid_dropout=0.1)
    model = Phi(config).train()
    x = torch.randn(B, T, C, requires_grad=True)
    cos, sin = model.rope_cos[None, None], model.rope_sin[None, None]
    kept = {}

    def pack(t):
        if T in t.shape or B * T in t.shape:  # activations, not (casts of) weights
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        model.layers[0](x, cos, sin)
    per_token = sum(kept.values()) / (B * T)
    assert per_token == pytest.approx(24 * C + 4 * M, rel=0.1)


def gpu_run(tmp_path, shards, repo_root, run_python, name, *args):
    tiny = str(repo_root / "experiments/tiny.yaml")
    settings = {"trainer.accelerator": "gpu", "trainer.max_steps": 3}
    config = overlay(tmp_path, shards, name, **settings)
    run_python(
        "-m", "phi1.cli", "fit", "--config", tiny, "--config", config, "--trainer.logger.init_args.name", name, *args
    )
    return curves(tmp_path / "runs" / name)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP needs CUDA (torch refuses it on CPU); 2 GPUs to shard")
def test_fsdp_on_two_gpus_equals_one_gpu(tmp_path, code_shards, repo_root, run_python):
    """Sharded gradients: the logged norm is the global one, and clipping goes through FSDP's root module."""
    fsdp = str(repo_root / "experiments/strategies/fsdp.yaml")
    one = gpu_run(tmp_path, code_shards, repo_root, run_python, "one")
    two = gpu_run(tmp_path, code_shards, repo_root, run_python, "fsdp", "--config", fsdp, "--trainer.devices=2")
    for tag in one:
        torch.testing.assert_close(two[tag], one[tag], rtol=1e-4, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="DeepSpeed runs under Lightning on CUDA only")
def test_deepspeed_stage_2_logs_the_engines_gradient_norm(tmp_path, code_shards, repo_root, run_python):
    pytest.importorskip("deepspeed")
    zero2 = str(repo_root / "experiments/strategies/deepspeed_stage_2.yaml")
    one = gpu_run(tmp_path, code_shards, repo_root, run_python, "one")
    ds = gpu_run(tmp_path, code_shards, repo_root, run_python, "zero2", "--config", zero2, "--trainer.devices=1")
    assert len(ds["train/grad_norm"]) == 3  # once per optimizer step, not per micro-batch
    for tag in one:
        torch.testing.assert_close(ds[tag], one[tag], rtol=1e-4, atol=0)


def decay_groups_under_fsdp(rank: int, port: int, out: str):
    """One of 2 gloo ranks: the optimizer groups `PhiLitModule` makes for a model FSDP has sharded as the overlay
    does (each Block a unit, `use_orig_params`, full shard), written to `out` by rank 0."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        module = PhiLitModule(PhiConfig.from_name("tiny", vocab_size=64, block_size=32, n_layer=2))
        module.configure_model()
        FullyShardedDataParallel(
            module, device_id=torch.device("cpu"), use_orig_params=True, auto_wrap_policy=ModuleWrapPolicy({Block})
        )
        groups = module.configure_optimizers().param_groups
        if rank == 0:
            torch.save([[p.dim() for p in g["params"]] for g in groups], out)
    finally:
        dist.destroy_process_group()


def test_weight_decay_reaches_the_linear_weights_of_an_fsdp_sharded_model(tmp_path):
    """FSDP leaves every parameter a flat 1-D shard, so a decay group chosen by shape would be empty there."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(decay_groups_under_fsdp, args=(port, str(tmp_path / "groups.pt")), nprocs=2)
    decay, no_decay = torch.load(tmp_path / "groups.pt")
    assert len(decay) == 2 * 4 + 1  # qkv, dense, fc1, fc2 per block, and the head
    assert len(no_decay) == 1 + 2 * 6 + 2 + 1  # embedding; per block a LayerNorm's 2 and 4 biases; final LN; head bias
    assert set(decay) == {1}  # sharded: the shapes no longer tell weights from biases
