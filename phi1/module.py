"""The LightningModule: next-token cross-entropy on packed token blocks (paper §2.3).

It owns the training and validation steps and the optimizer's parameter groups; the optimizer and the
lr schedule themselves are injected by LightningCLI (`model.optimizer`, `model.scheduler` in the YAML),
and built in `configure_optimizers`, after the strategy has wrapped the model.

A batch is a dict: `tokens` (B, T+1) int64, and, for the prompt-masking ablation, `loss_mask` (B, T+1),
0 where a token is not a target.
"""

from collections.abc import Callable
from dataclasses import asdict, fields

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn
from torch.nn import functional as F
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanMetric

from phi1.checkpoint import load_model
from phi1.errors import ConfigError
from phi1.loss import IGNORE, chunked_cross_entropy
from phi1.model import Phi, PhiConfig
from phi1.parallel import (
    checkpoint_blocks,
    clip_sharded_gradients,
    deepspeed_engine,
    deepspeed_loss_scale,
    gradient_norm,
)

TRAINING_ONLY = {"attn_dropout", "resid_dropout", "init_std"}


class PhiLitModule(L.LightningModule):
    def __init__(
        self,
        config: PhiConfig,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: Callable[[Optimizer, int], LRScheduler] | None = None,
        init_from: str | None = None,
        compile: bool = False,
        activation_checkpointing: bool = False,
        loss_chunk_size: int | None = None,
    ):
        """
        Args:
            config: a preset of `phi1.model.PRESETS` and the fields that differ from it (dropout, ...).
            optimizer: weight decay applies to the Linear weights only; biases, LayerNorms and the embedding get none.
            scheduler: stepped every optimizer step and built as `scheduler(optimizer, trainer.max_steps)`, so
                its length follows the run's, e.g. `phi1.schedule.WarmupDecayLR`; None keeps lr constant.
            init_from: weights to start from: a phi1 `.ckpt`, or a `PhiForCausalLM` folder or hub id.
            compile: `torch.compile` each block.
            activation_checkpointing: recompute each block's activations in backward (`phi1.parallel`); under
                FSDP set the strategy's `activation_checkpointing_policy` instead (experiments/strategies/fsdp.yaml).
            loss_chunk_size: apply the head and the loss to this many tokens at a time, so the fp32 logits of a
                whole batch never exist (`phi1.loss.chunked_cross_entropy`); None computes them at once.
        """
        if loss_chunk_size is not None and (isinstance(loss_chunk_size, bool) or loss_chunk_size < 1):
            raise ConfigError(f"model.loss_chunk_size={loss_chunk_size!r}: must be a positive number of tokens")
        super().__init__()
        self.config = config if isinstance(config, PhiConfig) else PhiConfig(**config)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.init_from, self.compile_blocks = init_from, compile
        self.activation_checkpointing, self.loss_chunk_size = activation_checkpointing, loss_chunk_size
        self.save_hyperparameters(
            {
                "config": asdict(self.config),
                "init_from": init_from,
                "compile": compile,
                "activation_checkpointing": activation_checkpointing,
                "loss_chunk_size": loss_chunk_size,
            }
        )
        self.model: Phi | None = None
        self.val_loss = MeanMetric()
        self.val_by_source = None  # (sources, 2): loss x tokens and tokens of this validation, per source

    def configure_model(self):
        if self.model is not None:
            return
        self.model = Phi(self.config)
        if self.init_from:
            self.load_initial_weights()
        if self.compile_blocks:
            for block in self.model.layers:
                block.compile()
        if self.activation_checkpointing:
            if self._trainer is not None and isinstance(self.trainer.strategy, FSDPStrategy):
                raise ConfigError(
                    "model.activation_checkpointing: under FSDP set trainer.strategy.init_args."
                    "activation_checkpointing_policy: [phi1.model.Block] instead (experiments/strategies/fsdp.yaml)"
                )
            checkpoint_blocks(self.model)

    def load_initial_weights(self):
        try:
            source = load_model(self.init_from)
        except (OSError, ConfigError) as error:  # missing, unreadable, or not a phi-1 model
            raise ConfigError(f"model.init_from={self.init_from}: {error}") from None
        architecture = [f.name for f in fields(PhiConfig) if f.compare and f.name not in TRAINING_ONLY]
        mismatched = {
            name: (getattr(source.config, name), getattr(self.config, name))
            for name in architecture
            if getattr(source.config, name) != getattr(self.config, name)
        }
        if mismatched:
            detail = ", ".join(f"{k}: {a} there, {b} here" for k, (a, b) in mismatched.items())
            raise ConfigError(f"model.init_from={self.init_from}: architecture differs from model.config ({detail})")
        self.model.load_state_dict(source.state_dict())

    def loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean next-token cross-entropy over the target tokens, and their count (a tensor: reading it on the
        host would wait for the device every micro-batch)."""
        tokens = batch["tokens"]
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        if (mask := batch.get("loss_mask")) is not None:
            targets = targets.masked_fill(mask[:, 1:] == 0, IGNORE)
        if self.loss_chunk_size:
            x = self.model(inputs, head=False)  # (B, T, C)
            loss = chunked_cross_entropy(x, self.model.lm_head, targets, self.loss_chunk_size)
        else:
            logits = self.model(inputs)  # (B, T, vocab) fp32
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        return loss, (targets != IGNORE).sum()

    def on_train_start(self):
        self.step_losses, self.logged_step = [], self.trainer.global_step

    def training_step(self, batch, batch_idx):
        loss, _ = self.loss(batch)
        self.step_losses.append(loss.detach())
        if (scale := deepspeed_loss_scale(self.trainer)) != 1:
            loss = loss * scale  # Lightning and DeepSpeed both divide by the accumulation
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        """`train/loss` once per optimizer step: the mean over its micro-batches and devices, the loss whose
        gradient the step took, so the curve is the same for any split of the global batch."""
        if self.trainer.global_step == self.logged_step:  # accumulating
            return
        self.log("train/loss", torch.stack(self.step_losses).mean(), prog_bar=True, sync_dist=True)
        self.step_losses, self.logged_step = [], self.trainer.global_step

    def validation_step(self, batch, batch_idx):
        """Loss over every target token, and per source when the batch names each row's (`batch["source"]`,
        from `PackedDataModule`, whose `names` label them `val/loss/<name>`)."""
        names = getattr(self.trainer.datamodule, "names", None) if self._trainer is not None else None
        if "source" not in batch or not names:
            loss, n = self.loss(batch)
            self.val_loss.update(loss, weight=n)
            return
        if self.val_by_source is None:
            self.val_by_source = torch.zeros(len(names), 2, dtype=torch.float64, device=self.device)
        for source in batch["source"].unique().tolist():
            rows = batch["source"] == source
            loss, n = self.loss({k: v[rows] for k, v in batch.items()})
            self.val_loss.update(loss, weight=n)
            self.val_by_source[source] += torch.stack([loss.detach().double() * n, n.double()])

    def on_validation_epoch_end(self):
        loss = self.val_loss.compute()
        self.log_dict({"val/loss": loss, "val/perplexity": loss.exp()}, prog_bar=True)
        self.val_loss.reset()
        names = getattr(self.trainer.datamodule, "names", None)
        if names:  # every rank holds the (sources, 2) sums, zeros where it saw none of a source
            if self.val_by_source is None:
                self.val_by_source = torch.zeros(len(names), 2, dtype=torch.float64, device=self.device)
            sums = self.trainer.strategy.reduce(self.val_by_source, reduce_op="sum")  # loss x tokens, tokens
            self.log_dict({f"val/loss/{name}": s / n for name, (s, n) in zip(names, sums.float(), strict=True) if n})
            self.val_by_source = None

    def on_before_optimizer_step(self, optimizer):
        """Gradient norm before clipping, of the whole model under any strategy (`phi1.parallel.gradient_norm`;
        one fused pass over the gradients)."""
        if (norm := gradient_norm(self)) is not None:
            self.log("train/grad_norm", norm)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        """DeepSpeed computes the gradient norm in its own step, which it takes at the end of an accumulation."""
        engine = deepspeed_engine(self.trainer)
        steps = engine.global_steps if engine is not None else None
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if engine is not None and engine.global_steps != steps and (norm := engine.get_global_grad_norm()) is not None:
            self.log("train/grad_norm", float(norm))

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Norm clipping under FSDP by the root FSDP module, which knows the norm of the sharded gradient."""
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm"):
            if clip_sharded_gradients(self, gradient_clip_val):
                return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        """Weight decay on the Linear weights only, chosen by module rather than by shape: FSDP leaves every
        parameter a flat 1-D shard by the time the optimizer is built."""
        linear = {id(m.weight) for m in self.model.modules() if isinstance(m, nn.Linear)}
        decay, no_decay = [], []
        for p in self.model.parameters():
            (decay if id(p) in linear else no_decay).append(p)
        optimizer = self.optimizer([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
        if self.scheduler is None:
            return optimizer
        if self.trainer.max_steps < 1:
            raise ConfigError(f"trainer.max_steps={self.trainer.max_steps}: model.scheduler needs the run's length")
        scheduler = self.scheduler(optimizer, self.trainer.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
