"""What `PhiLitModule` does differently under Lightning's strategies (DDP, FSDP, DeepSpeed ZeRO-2; the overlays in
experiments/strategies/), and activation checkpointing per block.

Under DDP every rank holds the whole all-reduced gradient. FSDP leaves each rank a shard of every gradient, so
their norm is the square root of the squares summed over the shard group, and norm clipping goes through the
root FSDP module (Lightning's FSDP precision plugin refuses it). DeepSpeed ZeRO-2 keeps the reduced gradients
inside its engine (`p.grad` is empty), computes their norm in its own step and clips there; that norm is read
from the engine after the step. Lightning and DeepSpeed both divide the loss by the accumulation; one of the two
divisions is undone.
"""

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from torch import nn

from phi1.model import Block


def gradient_norm(module) -> torch.Tensor | None:
    """2-norm of the whole model's gradient before clipping, the same on every rank; None under DeepSpeed
    (`deepspeed_engine(...).get_global_grad_norm()` after its step)."""
    strategy = module.trainer.strategy
    if isinstance(strategy, DeepSpeedStrategy):
        return None
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=module.device)
    if isinstance(strategy, FSDPStrategy) and strategy.sharding_strategy.name != "NO_SHARD":
        squares = norm.float().square()
        dist.all_reduce(squares, group=module.trainer.model.process_group)  # the ranks that split each gradient
        norm = squares.sqrt()
    return norm


def clip_sharded_gradients(module, max_norm: float) -> bool:
    """Clip the gradient to `max_norm` by its global norm under FSDP; False under any other strategy."""
    if not isinstance(module.trainer.strategy, FSDPStrategy):
        return False
    module.trainer.model.clip_grad_norm_(max_norm)
    return True


def deepspeed_loss_scale(trainer) -> int:
    """What the micro-batch loss must be multiplied by before backward: Lightning divides it by the accumulation,
    and DeepSpeed's `engine.backward` divides it again (`scale_wrt_gas`), so under DeepSpeed it is multiplied
    back once; the gradients, their norm and their clipping are then those of the step's mean loss."""
    return trainer.accumulate_grad_batches if isinstance(trainer.strategy, DeepSpeedStrategy) else 1


def deepspeed_engine(trainer):
    """The DeepSpeed engine training the model, or None under another strategy."""
    strategy = trainer.strategy
    return strategy.deepspeed_engine if isinstance(strategy, DeepSpeedStrategy) else None


def checkpoint_blocks(model: nn.Module) -> None:
    """Wrap each `Block` in place so that it keeps only its input for backward and runs its forward again there
    (non-reentrant `torch.utils.checkpoint`): about a third more compute for one block's activations at a time.
    The wrapper leaves `state_dict` keys as they were."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

    apply_activation_checkpointing(model, check_fn=lambda m: isinstance(m, Block))
