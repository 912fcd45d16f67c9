import pytest
import torch
from torch.nn import functional as F

from phi1.loss import IGNORE, chunked_cross_entropy
from phi1.model import PhiConfig
from phi1.module import PhiLitModule


def plain_cross_entropy(x, head, targets):
    logits = head(x).float()
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


def loss_and_grads(loss_fn, x, head, targets):
    x = x.detach().requires_grad_()
    head.zero_grad()
    loss = loss_fn(x, head, targets)
    loss.backward()
    return loss.detach(), x.grad, head.weight.grad.clone(), head.bias.grad.clone()


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10_000])
def test_chunked_loss_and_gradients_equal_the_plain_ones(chunk_size):
    torch.manual_seed(0)
    B, T, C, V = 3, 21, 16, 300
    head = torch.nn.Linear(C, V)
    x = torch.randn(B, T, C)
    targets = torch.randint(0, V, (B, T))
    targets[0, :5] = IGNORE  # masked prompt tokens
    plain = loss_and_grads(plain_cross_entropy, x, head, targets)
    chunked = loss_and_grads(lambda *a: chunked_cross_entropy(*a, chunk_size), x, head, targets)
    for a, b in zip(plain, chunked, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_chunked_loss_keeps_no_full_logits_for_backward():
    """What autograd keeps between forward and backward: the plain loss keeps (B·T, V) fp32 log-probabilities,
    the chunked one only its inputs (its chunks' logits are recomputed in backward)."""
    torch.manual_seed(0)
    B, T, C, V, chunk = 2, 64, 8, 1000, 32
    head, x, targets = torch.nn.Linear(C, V), torch.randn(B, T, C, requires_grad=True), torch.randint(0, V, (B, T))

    def largest_kept(loss_fn):
        kept = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.numel()) or t, lambda t: t):
            loss_fn(x, head, targets).backward()
        return max(kept)

    assert largest_kept(plain_cross_entropy) == B * T * V
    assert largest_kept(lambda *a: chunked_cross_entropy(*a, chunk)) == V * C  # the head's weight, no logits


def test_module_switch_gives_the_plain_loss_and_gradients():
    config = PhiConfig.from_name("tiny", vocab_size=96, block_size=32, n_layer=2)
    batch = {"tokens": torch.randint(0, 96, (2, 33), generator=torch.Generator().manual_seed(1))}
    results = []
    for chunk in (None, 20):
        torch.manual_seed(0)
        module = PhiLitModule(config, loss_chunk_size=chunk)
        module.configure_model()
        loss, n = module.loss(batch)
        loss.backward()
        results.append((loss.detach(), n, [p.grad for p in module.parameters()]))
    (plain, n_plain, g_plain), (chunked, n_chunked, g_chunked) = results
    assert n_plain == n_chunked == 64
    torch.testing.assert_close(chunked, plain, rtol=1e-6, atol=0)
    for a, b in zip(g_plain, g_chunked, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("bad", [0, -4, True])
def test_loss_chunk_size_must_be_positive(bad):
    from phi1.errors import ConfigError

    with pytest.raises(ConfigError, match="model.loss_chunk_size"):
        PhiLitModule(PhiConfig.from_name("tiny"), loss_chunk_size=bad)
