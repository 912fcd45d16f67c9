"""Next-token cross-entropy over phi-1's 51,200-way head, computed in chunks of tokens (paper §2.3's 2048-token
sequences).

The plain loss materializes the logits of every token in fp32, (B, T, 51200): 400 MiB per 2048-token sequence,
and autograd keeps their log-softmax (as much again) until backward, more than a phi-1-small block's activations.
`chunked_cross_entropy` applies `lm_head` and the loss to `chunk_size` tokens at a time under activation
checkpointing: a chunk's logits exist only while its loss is computed, in forward and again in backward, and
nothing of their size is kept in between. The cost is the head's forward once more (2·C·V FLOPs per token,
2-3% of phi-1's training FLOPs). Loss and gradients equal the plain path's up to the order of float sums.
"""

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

IGNORE = -100  # target id that is not a target (masked prompt tokens)


def summed_cross_entropy(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor):
    """Sum of the losses of x (N, C) through the head: fp32 logits (N, V), as `Phi.forward` gives them."""
    logits = F.linear(x, weight, bias).float()
    return F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum")


def chunked_cross_entropy(x: torch.Tensor, head: nn.Linear, targets: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Mean cross-entropy of `head(x)` against targets (B, T), over the targets that are not IGNORE, from the
    final hidden states x (B, T, C), `chunk_size` tokens at a time."""
    x, targets = x.flatten(0, 1), targets.flatten()  # (B·T, C), (B·T,)
    total = sum(
        checkpoint(summed_cross_entropy, x_chunk, head.weight, head.bias, t_chunk, use_reentrant=False)
        for x_chunk, t_chunk in zip(x.split(chunk_size), targets.split(chunk_size), strict=True)
    )
    return total / (targets != IGNORE).sum()
