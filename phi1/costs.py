"""What a phi-1 run costs (paper §2.3's layout: 8 GPUs, 1024 x 2048 tokens per step): parameters, FLOPs per
token, and per-GPU memory and traffic under each strategy of experiments/strategies/ and each memory switch of
`PhiLitModule`, computed on the meta device from parameter counts, allocating no weights. Estimates, not
measurements; `tests/test_parallel.py` checks the activation estimate against what autograd keeps.

    python -m phi1.costs phi-1-small
    python -m phi1.costs experiments/phi1.yaml [experiments/phi1-small.yaml]   # stacked like repeated --config

(`python -m phi1.model ...` runs the same.)
"""

import argparse
from dataclasses import asdict, fields

import torch
import yaml

from phi1.errors import ConfigError
from phi1.model import PRESETS, Phi, PhiConfig


def config_from_files(*paths: str) -> PhiConfig:
    """The PhiConfig of LightningCLI YAMLs stacked as `--config A --config B` (model.config, or
    model.init_args.config; a later file's fields override an earlier one's)."""
    arch = {}
    for path in paths:
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
        model = cfg.get("model") or {}
        layer = model.get("init_args", model).get("config")
        if layer is not None and not isinstance(layer, dict):
            raise ConfigError(f"{path}: model.config should be a mapping, got {layer!r}")
        arch.update(layer or {})
    known = {f.name for f in fields(PhiConfig)}
    if unknown := set(arch) - known:
        raise ConfigError(
            f"{', '.join(paths)}: unknown model.config field(s) {sorted(unknown)}; known: {sorted(known)}"
        )
    return PhiConfig(**arch)


def describe(config: PhiConfig) -> str:
    """Size, FLOPs and memory of a model, computed on the meta device."""
    with torch.device("meta"):
        model = Phi(config)
    n, gib = model.num_params(), 2**30
    lines = [f"{k}: {v}" for k, v in asdict(config).items()]
    lines += [
        f"parameters: {n:,} ({model.num_params(exclude_embedding=True):,} without the input embedding)",
        f"FLOPs per token (6N + 12·L·C·T, T={config.block_size}): {model.flops_per_token() / 1e9:.2f} GFLOP",
        f"weights: fp32 {4 * n / gib:.2f} GiB, bf16 {2 * n / gib:.2f} GiB",
        f"training state, mixed precision (fp32 weights + fp32 grads + AdamW m, v): {16 * n / gib:.2f} GiB",
    ]
    return "\n".join(lines + training_costs(model))


def training_costs(model: Phi, gpus: int = 8, micro_batch: int = 8, global_batch: int = 1024) -> list[str]:
    """Per-GPU memory and traffic of each strategy (experiments/strategies/) and of the memory switches, for
    bf16-mixed AdamW at the paper's layout (8 GPUs x 8 sequences x 16 accumulation = 1024 per step), from the
    parameter counts (ZeRO paper accounting) and the tensors autograd keeps per token (bf16 autocast, fused
    attention): ≈ 24C + 4M bytes per block (residual fp32 input, bf16 LayerNorm outputs, q, k, v, attention
    output, MLP hidden, dropout masks; tests/test_parallel.py measures it), 4V for the fp32 log-softmax."""
    c = model.config
    n, T, L, C, M, V = model.num_params(), c.block_size, c.n_layer, c.n_embd, c.mlp_dim, c.vocab_size
    block = sum(p.numel() for p in model.layers[0].parameters())
    shard, accumulate, gib = (gpus - 1) / gpus, global_batch // (gpus * micro_batch), 2**30
    tokens = micro_batch * T
    flops = model.flops_per_token()
    recompute = 2 * L * block + 4 * L * C * T  # one more forward of the blocks per token
    kept_logits = tokens * 4 * V
    gathered = 4 * (n - L * block + 2 * block)  # fp32: FSDP's root unit and two blocks
    return [
        f"per GPU at {gpus} GPUs, micro-batch {micro_batch} x {T} tokens, {accumulate} accumulation "
        f"({global_batch} sequences per step), bf16-mixed AdamW:",
        f"  ddp: model state {16 * n / gib:.2f} GiB (fp32 weights, gradients, Adam m, v on every GPU); "
        f"sends {2 * shard * 4 * n / gib:.1f} GiB per step (one fp32 gradient all-reduce)",
        f"  deepspeed_stage_2: model state {(2 + 14 / gpus) * n / gib:.2f} GiB (bf16 weights on every GPU; "
        f"gradients, fp32 master weights, m, v sharded) + buckets; sends "
        f"{shard * 2 * n * (accumulate + 1) / gib:.1f} GiB per step (bf16 gradients reduced every micro-batch, "
        f"weights gathered once)",
        f"  fsdp: model state {16 * n / gpus / gib:.2f} GiB (all sharded) + {gathered / gib:.2f} GiB gathered while "
        f"in use (embedding, head, 2 blocks); sends {3 * shard * 4 * n * accumulate / gib:.1f} GiB per step "
        f"(fp32 weights gathered twice and gradients reduce-scattered every micro-batch)",
        f"activations per micro-batch: blocks {tokens * L * (24 * C + 4 * M) / gib:.2f} GiB; with "
        f"model.activation_checkpointing {tokens * L * 4 * C / gib:.2f} GiB kept + "
        f"{tokens * (24 * C + 4 * M) / gib:.2f} GiB for the block recomputed, +{recompute / flops:.0%} FLOPs",
        f"loss per micro-batch: {kept_logits / gib:.2f} GiB of fp32 log-softmax kept for backward; with "
        f"model.loss_chunk_size none kept (one chunk's logits at a time), +{2 * C * V / flops:.1%} FLOPs",
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m phi1.costs", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="+", help=f"a preset ({', '.join(PRESETS)}), or CONFIG.yaml [OVERLAY.yaml ...]")
    names = parser.parse_args(argv).config
    try:
        config = PhiConfig.from_name(names[0]) if names[0] in PRESETS else config_from_files(*names)
    except (OSError, ValueError, yaml.YAMLError) as e:
        parser.exit(2, f"error: {' '.join(str(e).split())}\n")
    print(describe(config))


if __name__ == "__main__":
    main()
