from functools import partial

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from phi1.callbacks import TokenThroughput
from phi1.model import PhiConfig
from phi1.module import PhiLitModule
from phi1.schedule import WarmupDecayLR

TINY = PhiConfig.from_name("tiny", vocab_size=64, block_size=32)


def in_memory_batches(n=64, seq_len=32, batch_size=8):
    """Batches of a learnable token stream: arithmetic sequences mod 64 with random starts and strides."""
    g = torch.Generator().manual_seed(0)
    start = torch.randint(0, 64, (n, 1), generator=g)
    stride = torch.randint(1, 4, (n, 1), generator=g)
    tokens = (start + stride * torch.arange(seq_len + 1)) % 64
    return DataLoader([{"tokens": t} for t in tokens], batch_size=batch_size)


def trainer(tmp_path, **kwargs):
    return L.Trainer(
        accelerator="cpu",
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_checkpointing=False,
        logger=L.pytorch.loggers.CSVLogger(tmp_path),
        log_every_n_steps=1,
        **kwargs,
    )


def test_loss_falls_on_in_memory_tokens(tmp_path):
    torch.manual_seed(0)
    module = PhiLitModule(TINY, optimizer=partial(torch.optim.AdamW, lr=3e-3))
    t = trainer(tmp_path, max_steps=60, callbacks=[TokenThroughput(peak_flops=1e12)])
    t.fit(module, train_dataloaders=in_memory_batches(), val_dataloaders=in_memory_batches(n=16))
    logged = t.logged_metrics
    assert logged["val/loss"] < 0.5 * torch.log(torch.tensor(64.0))
    assert logged["val/perplexity"] == pytest.approx(logged["val/loss"].exp().item(), rel=1e-5)
    assert logged["train/grad_norm"] > 0
    assert logged["throughput/tokens_per_sec"] > 0 and 0 < logged["throughput/mfu"] < 1


def test_weight_decay_skips_biases_layernorms_and_embedding():
    module = PhiLitModule(TINY, optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1))
    module.configure_model()
    decay, no_decay = module.configure_optimizers().param_groups
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    decayed = {names[id(p)] for p in decay["params"]}
    assert "lm_head.weight" in decayed and "layers.0.self_attn.qkv.weight" in decayed
    assert not any(n.endswith("bias") or "layernorm" in n or n.startswith("embed") for n in decayed)
    assert len(decay["params"]) + len(no_decay["params"]) == len(names)


def test_loss_mask_leaves_prompt_tokens_out():
    module = PhiLitModule(TINY)
    module.configure_model()
    tokens = torch.randint(0, 64, (2, 9))
    mask = torch.ones_like(tokens)
    mask[:, :5] = 0
    masked, n = module.loss({"tokens": tokens, "loss_mask": mask})
    assert n == 2 * 4
    logits = module.model(tokens[:, :-1])
    expected = torch.nn.functional.cross_entropy(logits[:, 4:].flatten(0, 1), tokens[:, 5:].flatten())
    torch.testing.assert_close(masked, expected)


def test_scheduler_steps_every_optimizer_step_and_ends_at_max_steps(tmp_path):
    module = PhiLitModule(
        TINY,
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
        scheduler=partial(WarmupDecayLR, warmup_steps=4),
    )
    t = trainer(
        tmp_path,
        max_steps=8,
        limit_val_batches=0,
        callbacks=[L.pytorch.callbacks.LearningRateMonitor(logging_interval="step")],
    )
    t.fit(module, train_dataloaders=in_memory_batches())
    assert t.optimizers[0].param_groups[0]["lr"] == 0.0  # decayed to the floor at step 8
    t = trainer(tmp_path, max_steps=-1, max_epochs=1, limit_val_batches=0)
    with pytest.raises(ValueError, match="trainer.max_steps=-1: model.scheduler needs the run's length"):
        t.fit(PhiLitModule(TINY, scheduler=partial(WarmupDecayLR, warmup_steps=4)), in_memory_batches())
    t = trainer(tmp_path, max_steps=3, limit_val_batches=0)
    with pytest.raises(ValueError, match=r"warmup_steps=4: need 0 <= warmup_steps <= trainer.max_steps \(3\)"):
        t.fit(PhiLitModule(TINY, scheduler=partial(WarmupDecayLR, warmup_steps=4)), in_memory_batches())


def test_init_from_loads_weights_and_checks_the_architecture(tmp_path):
    from phi1.checkpoint import save_model
    from phi1.model import Phi

    source = Phi(TINY)
    save_model(source, tmp_path / "init.ckpt")
    module = PhiLitModule(
        PhiConfig.from_name("tiny", vocab_size=64, block_size=32, attn_dropout=0.1),
        init_from=str(tmp_path / "init.ckpt"),
    )
    module.configure_model()
    torch.testing.assert_close(module.model.state_dict(), source.state_dict())
    other = PhiLitModule(PhiConfig.from_name("tiny"), init_from=str(tmp_path / "init.ckpt"))
    with pytest.raises(ValueError, match="vocab_size: 64 there, 4160 here"):
        other.configure_model()


class LossRecorder(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())


@pytest.mark.slow  # compiling a block's forward and backward with inductor on CPU takes ~20 s
def test_compiled_blocks_train_to_the_same_losses_as_eager(tmp_path):
    """`model.compile` (torch.compile of each block) through a real Trainer: the losses of eager training, up to
    float rounding, at every step."""
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        config = PhiConfig.from_name("tiny", vocab_size=64, block_size=32, n_layer=2)
        module = PhiLitModule(config, optimizer=partial(torch.optim.AdamW, lr=3e-3), compile=compiled)
        recorder = LossRecorder()
        t = trainer(tmp_path / str(compiled), max_steps=3, limit_val_batches=0, callbacks=[recorder])
        t.fit(module, train_dataloaders=in_memory_batches())
        losses[compiled] = recorder.losses
    assert len(losses[True]) == 3
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-5, atol=0)
