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
from torch.nn import functional as F
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanMetric

from phi1.errors import ConfigError
from phi1.model import Phi, PhiConfig

IGNORE = -100
TRAINING_ONLY = {"attn_dropout", "resid_dropout", "init_std"}


class PhiLitModule(L.LightningModule):
    def __init__(
        self,
        config: PhiConfig,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: Callable[[Optimizer, int], LRScheduler] | None = None,
        init_from: str | None = None,
        compile: bool = False,
    ):
        """
        Args:
            config: a preset of `phi1.model.PRESETS` and the fields that differ from it (dropout, ...).
            optimizer: weight decay applies to 2-D weights only; biases, LayerNorms and the embedding get none.
            scheduler: stepped every optimizer step and built as `scheduler(optimizer, trainer.max_steps)`, so
                its length follows the run's, e.g. `phi1.schedule.WarmupDecayLR`; None keeps lr constant.
            init_from: weights to start from: a phi1 `.ckpt`, or a `PhiForCausalLM` folder or hub id.
            compile: `torch.compile` each block.
        """
        super().__init__()
        self.config = config if isinstance(config, PhiConfig) else PhiConfig(**config)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.init_from, self.compile_blocks = init_from, compile
        self.save_hyperparameters({"config": asdict(self.config), "init_from": init_from, "compile": compile})
        self.model: Phi | None = None
        self.val_loss = MeanMetric()

    def configure_model(self):
        if self.model is not None:
            return
        self.model = Phi(self.config)
        if self.init_from:
            self.load_initial_weights()
        if self.compile_blocks:
            for block in self.model.layers:
                block.compile()

    def load_initial_weights(self):
        from phi1.checkpoint import load_model

        source = load_model(self.init_from)
        architecture = [f.name for f in fields(PhiConfig) if f.compare and f.name not in TRAINING_ONLY]
        mismatched = {
            name: (getattr(source.config, name), getattr(self.config, name))
            for name in architecture
            if getattr(source.config, name) != getattr(self.config, name)
        }
        if mismatched:
            detail = ", ".join(f"{k}: {a} there, {b} here" for k, (a, b) in mismatched.items())
            raise ValueError(f"model.init_from={self.init_from}: architecture differs from model.config ({detail})")
        self.model.load_state_dict(source.state_dict())

    def loss(self, batch: dict) -> tuple[torch.Tensor, int]:
        """Mean next-token cross-entropy over the target tokens, and their count."""
        tokens = batch["tokens"]
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        if (mask := batch.get("loss_mask")) is not None:
            targets = targets.masked_fill(mask[:, 1:] == 0, IGNORE)
        logits = self.model(inputs)  # (B, T, vocab) fp32
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        return loss, int((targets != IGNORE).sum())

    def training_step(self, batch, batch_idx):
        loss, _ = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, n = self.loss(batch)
        self.val_loss.update(loss, weight=n)

    def on_validation_epoch_end(self):
        loss = self.val_loss.compute()
        self.log_dict({"val/loss": loss, "val/perplexity": loss.exp()}, prog_bar=True)
        self.val_loss.reset()

    def on_before_optimizer_step(self, optimizer):
        """Gradient norm before clipping (one fused pass over the gradients; the logger keeps every n-th)."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        self.log("train/grad_norm", torch.nn.utils.get_total_norm(grads))

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (decay if p.dim() == 2 and not name.startswith("embed_tokens") else no_decay).append(p)
        optimizer = self.optimizer([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
        if self.scheduler is None:
            return optimizer
        if self.trainer.max_steps < 1:
            raise ConfigError(f"trainer.max_steps={self.trainer.max_steps}: model.scheduler needs the run's length")
        scheduler = self.scheduler(optimizer, self.trainer.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
