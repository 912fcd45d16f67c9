"""The phi-1 decoder (paper §2.3; released checkpoint microsoft/phi-1).

A GPT with a *parallel* block: attention and MLP read the same LayerNorm output
and are added to the residual together,

    x ──┬──────────────────────────────────────────────(+)── x'
        └─ ln ─┬─ attention (rotary on 32 of 64 dims) ─(+)
               └─ fc1 ─ gelu(tanh) ─ fc2 ──────────────(+)

every Linear has a bias, embeddings and head are untied, logits are fp32.
Parameter names follow the Hugging Face `PhiForCausalLM` checkpoint except
for the fused `qkv` projection ([q|k|v] rows, as in the original release).

Notation: B batch, T query length, S key length (cache + T), C hidden size,
nh heads, hs head size, rd rotary dims per head.

`python -m phi1.model PRESET` or `python -m phi1.model CONFIG.yaml [OVERLAY.yaml ...]` prints size,
FLOPs and memory from the meta device, allocating no weights (`phi1.costs`).
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn import functional as F

from phi1.errors import ConfigError

try:  # FlashAttention-2 kernels; optional, CUDA only
    from flash_attn import flash_attn_func
except ImportError:
    flash_attn_func = None


PRESETS = {
    "phi-1": dict(
        vocab_size=51200,  # tokenizer has 50,295; the rest is padding
        block_size=2048,  # context length
        n_layer=24,
        n_embd=2048,
        n_head=32,
        mlp_dim=8192,
        rotary_dim=32,  # rotary dims per head, the first half of each 64-dim head
        rope_base=10000.0,
        layer_norm_eps=1e-5,
        attn_dropout=0.0,  # 0.1 in pretraining (paper §2.3), 0.0 in the released config
        resid_dropout=0.0,
        init_std=0.02,
    ),  # 1,418,270,720 parameters
    "phi-1-small": dict(n_layer=20, n_embd=1024, n_head=16, mlp_dim=4096),  # 356,794,368 parameters
    # the demo (experiments/tiny.yaml): 4,134 tokens padded to a multiple of 64, as 50,295 are to 51,200
    "tiny": dict(vocab_size=4160, block_size=512, n_layer=4, n_embd=128, n_head=4, mlp_dim=512, rotary_dim=16),
}


@dataclass
class PhiConfig:
    """A preset (`PRESETS`; the others start from phi-1) with the fields that differ from it given:
    `PhiConfig(preset="phi-1-small", attn_dropout=0.1)`, in YAML `model.config: {preset: phi-1-small, ...}`.
    Fields left None take the preset's value."""

    preset: str = field(default="phi-1", compare=False)
    vocab_size: int | None = None
    block_size: int | None = None
    n_layer: int | None = None
    n_embd: int | None = None
    n_head: int | None = None
    mlp_dim: int | None = None
    rotary_dim: int | None = None
    rope_base: float | None = None
    layer_norm_eps: float | None = None
    attn_dropout: float | None = None
    resid_dropout: float | None = None
    init_std: float | None = None

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ConfigError(f"model.config.preset={self.preset!r}: unknown; choose one of {sorted(PRESETS)}")
        preset = {**PRESETS["phi-1"], **PRESETS[self.preset]}
        for name, value in preset.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        for name in ("vocab_size", "block_size", "n_layer", "n_embd", "n_head", "mlp_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.config.{name}={value!r}: must be a positive integer")
        for name in ("attn_dropout", "resid_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.config.{name}={getattr(self, name)}: must lie in [0, 1)")
        for name in ("rope_base", "layer_norm_eps", "init_std"):
            if not 0.0 < getattr(self, name) < math.inf:
                raise ConfigError(f"model.config.{name}={getattr(self, name)}: must be positive and finite")
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.config: n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.rotary_dim < 0 or self.rotary_dim % 2 or self.rotary_dim > self.head_dim:
            raise ConfigError(
                f"model.config.rotary_dim={self.rotary_dim}: must be even and at most head_dim={self.head_dim}"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_name(cls, name: str, **overrides) -> "PhiConfig":
        return cls(preset=name, **overrides)


def rotary_cos_sin(config: PhiConfig, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, (block_size, rd), fp32, GPT-NeoX layout (frequencies repeated over two halves)."""
    inv_freq = 1.0 / config.rope_base ** (
        torch.arange(0, config.rotary_dim, 2, dtype=torch.float32, device=device) / config.rotary_dim
    )
    t = torch.arange(config.block_size, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)  # (block_size, rd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (block_size, rd)
    return emb.cos(), emb.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first rd dims of each head in fp32; x (B, nh, T, hs), cos/sin (B or 1, 1, T, rd)."""
    rd = cos.shape[-1]
    x_rot, x_pass = x[..., :rd].float(), x[..., rd:]
    x1, x2 = x_rot.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    x_rot = x_rot * cos + rotated * sin
    return torch.cat((x_rot.to(x.dtype), x_pass), dim=-1)


class KVCache(nn.Module):
    """Keys and values of one layer for incremental decoding: (B, nh, max_len, hs) each."""

    def __init__(self, batch_size: int, max_len: int, n_head: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch_size, n_head, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, nh, T, hs) at positions start.., return all keys and values so far (B, nh, S, hs)."""
        end = start + k.shape[2]
        if end > self.k.shape[2]:
            raise ValueError(f"KV cache holds {self.k.shape[2]} positions; writing up to {end}")
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: PhiConfig):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)  # [q|k|v]
        self.dense = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.attn_dropout

    def forward(self, x, cos, sin, mask=None, cache: KVCache | None = None, cache_pos: int = 0):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).unbind(dim=2)  # 3 × (B, T, nh, hs)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, T, hs)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(cache_pos, k, v)  # (B, nh, S, hs)
        dropout = self.dropout if self.training else 0.0
        half = q.dtype in (torch.float16, torch.bfloat16)  # under autocast, x (LayerNorm output) stays fp32
        if mask is None and cache is None and flash_attn_func is not None and x.is_cuda and half:
            y = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout, causal=True)
            y = y.reshape(B, T, C)
        else:
            if mask is None and cache is not None and T > 1:  # causal over a cache: query i sees keys ..S-T+i
                S = k.shape[2]
                mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
            is_causal = mask is None and cache is None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)
            y = y.transpose(1, 2).reshape(B, T, C)
        return self.dense(y)


class MLP(nn.Module):
    def __init__(self, config: PhiConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.n_embd, config.mlp_dim)
        self.fc2 = nn.Linear(config.mlp_dim, config.n_embd)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """Parallel block: x + drop(attn(ln(x))) + drop(mlp(ln(x))), one shared LayerNorm."""

    def __init__(self, config: PhiConfig):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.self_attn = CausalSelfAttention(config)
        self.mlp = MLP(config)
        self.resid_dropout = nn.Dropout(config.resid_dropout)

    def forward(self, x, cos, sin, mask=None, cache=None, cache_pos=0):
        h = self.input_layernorm(x)
        attn = self.self_attn(h, cos, sin, mask, cache, cache_pos)
        return x + self.resid_dropout(attn) + self.resid_dropout(self.mlp(h))


class Phi(nn.Module):
    def __init__(self, config: PhiConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.final_layernorm = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size)
        cos, sin = rotary_cos_sin(config)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.caches: list[KVCache] | None = None
        if self.embed_tokens.weight.device.type != "meta":
            self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        """normal(0, init_std) weights, zero biases, unit LayerNorm; also (re)computes the rotary tables,
        so a model built on the meta device can be materialized with `to_empty()` then `init_weights()`."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.init_rotary()

    def init_rotary(self):
        """(Re)compute the rotary tables on the device of the weights (they are buffers, not parameters)."""
        self.rope_cos, self.rope_sin = rotary_cos_sin(self.config, device=self.lm_head.weight.device)

    def _apply(self, fn, recurse=True):
        """Keep the rotary tables in fp32 when the model is cast (`.to(torch.bfloat16)`, `.half()`)."""
        super()._apply(fn, recurse)
        if self.rope_cos.dtype != torch.float32:
            self.init_rotary()
        return self

    def forward(
        self,
        idx: torch.Tensor,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cache_pos: int = 0,
        last_only: bool = False,
        head: bool = True,
    ) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, vocab_size) in fp32.

        Training passes idx alone (causal attention). Decoding with `setup_caches()` passes `cache_pos`, the
        cache slot of idx[:, 0]; `positions` (B, T) are per-row rotary positions (default cache_pos + arange(T))
        and `mask` a boolean (B, 1, T, S) of keys each query may see, for left-padded batches.
        `last_only` computes the logits of the last position alone (B, 1, vocab_size), as decoding needs.
        `head=False` returns the final LayerNorm's output (B, T, C) instead, for a loss that applies `lm_head`
        itself (`phi1.loss.chunked_cross_entropy`).
        """
        B, T = idx.shape
        if positions is None:
            if cache_pos + T > self.config.block_size:
                raise ValueError(f"sequence of {cache_pos + T} tokens exceeds block_size={self.config.block_size}")
            cos = self.rope_cos[None, None, cache_pos : cache_pos + T]  # (1, 1, T, rd)
            sin = self.rope_sin[None, None, cache_pos : cache_pos + T]
        else:
            cos, sin = (
                self.rope_cos[positions].unsqueeze(1),
                self.rope_sin[positions].unsqueeze(1),
            )  # (B, 1, T, rd)
        x = self.embed_tokens(idx)  # (B, T, C)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, self.caches[i] if self.caches else None, cache_pos)
        if last_only:
            x = x[:, -1:]
        x = self.final_layernorm(x)
        return self.lm_head(x).float() if head else x

    def setup_caches(self, batch_size: int, max_len: int | None = None):
        """Allocate one KV cache per layer for decoding; `clear_caches()` frees them."""
        p = self.lm_head.weight
        max_len = max_len or self.config.block_size
        self.caches = [
            KVCache(batch_size, max_len, self.config.n_head, self.config.head_dim, p.dtype, p.device)
            for _ in self.layers
        ]

    def clear_caches(self):
        self.caches = None

    def num_params(self, exclude_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed_tokens.weight.numel() if exclude_embedding else n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token, PaLM appendix B: 6N for the matmuls of the weights (N without the input
        embedding, a lookup; the untied head counts) + 12·L·C·T for attention scores and values over T keys
        (forward 2·2·C·T per layer, backward twice that), not halved for causality."""
        T = seq_len or self.config.block_size
        return 6 * self.num_params(exclude_embedding=True) + 12 * self.config.n_layer * self.config.n_embd * T


if __name__ == "__main__":  # the documented `python -m phi1.model CONFIG.yaml`; the report is phi1.costs's
    from phi1.costs import main

    main()
