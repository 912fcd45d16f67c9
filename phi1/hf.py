"""Hugging Face interop: load a `PhiForCausalLM` checkpoint into `Phi`, and write `Phi` back out.

The only differences between the two parameter layouts are the `model.` prefix and our fused [q|k|v]
projection, so conversion is a rename plus a concatenation; the logits match to float precision.

    python -m phi1.hf import microsoft/phi-1 phi-1.ckpt     # hub id or local folder -> Lightning checkpoint
    python -m phi1.hf export last.ckpt hf_out/              # Lightning checkpoint -> PhiForCausalLM folder
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from phi1.checkpoint import load_model, save_model
from phi1.model import Phi, PhiConfig

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def config_from_hf(hf: dict, source: str) -> PhiConfig:
    """PhiConfig from a `config.json` of model_type phi; refuses variants this architecture does not have."""
    rope = hf.get("rope_parameters") or {}
    checks = {
        "model_type": (hf.get("model_type"), "phi"),
        "hidden_act": (hf.get("hidden_act", "gelu_new"), "gelu_new"),
        "qk_layernorm": (hf.get("qk_layernorm", False), False),
        "tie_word_embeddings": (hf.get("tie_word_embeddings", False), False),
        "num_key_value_heads": (
            hf.get("num_key_value_heads") or hf["num_attention_heads"],
            hf["num_attention_heads"],
        ),
    }
    for field, (got, want) in checks.items():
        if got != want:
            raise ValueError(f"{source}: config.json field {field}={got!r}; phi-1's architecture needs {want!r}")
    n_head = hf["num_attention_heads"]
    head_dim = hf["hidden_size"] // n_head
    partial = rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 0.5))
    return PhiConfig(
        vocab_size=hf["vocab_size"],
        block_size=hf["max_position_embeddings"],
        n_layer=hf["num_hidden_layers"],
        n_embd=hf["hidden_size"],
        n_head=n_head,
        mlp_dim=hf["intermediate_size"],
        rotary_dim=int(head_dim * partial),
        rope_base=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
        attn_dropout=hf.get("attention_dropout", 0.0),
        resid_dropout=hf.get("resid_pdrop", 0.0),
        init_std=hf.get("initializer_range", 0.02),
    )


def config_to_hf(config: PhiConfig, eos_id: int = 50256) -> dict:
    partial = config.rotary_dim / config.head_dim
    return {
        "architectures": ["PhiForCausalLM"],
        "model_type": "phi",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.mlp_dim,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_head,
        "max_position_embeddings": config.block_size,
        "hidden_act": "gelu_new",
        "layer_norm_eps": config.layer_norm_eps,
        "initializer_range": config.init_std,
        "rope_theta": config.rope_base,  # transformers 4.x reads these two,
        "partial_rotary_factor": partial,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": config.rope_base,
            "partial_rotary_factor": partial,
        },
        "attention_dropout": 0.0,  # the released (inference) config; training dropout lives in our YAML
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "qk_layernorm": False,
        "tie_word_embeddings": False,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
        "use_cache": True,
    }


def state_dict_from_hf(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    ours = {}
    for name, tensor in hf.items():
        name = name.removeprefix("model.")
        if ".self_attn.k_proj." in name or ".self_attn.v_proj." in name or "rotary_emb" in name:
            continue
        if ".self_attn.q_proj." in name:
            q, k, v = (hf["model." + name.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj"))
            name, tensor = name.replace("q_proj", "qkv"), torch.cat((q, k, v), dim=0)
        ours[name] = tensor
    return ours


def state_dict_to_hf(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    hf = {}
    for name, tensor in ours.items():
        prefix = "" if name.startswith("lm_head.") else "model."
        if ".self_attn.qkv." in name:
            for p, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0), strict=True):
                hf[prefix + name.replace("qkv", p)] = part.contiguous()
        else:
            hf[prefix + name] = tensor.contiguous()
    return hf


def resolve(path_or_repo_id: str) -> Path:
    """A local folder, or a hub id downloaded (config and weights only) to the Hugging Face cache."""
    path = Path(path_or_repo_id)
    if path.is_dir():
        return path
    looks_local = path.suffix in (".ckpt", ".pt", ".bin", ".safetensors", ".json") or path.parent.is_dir()
    if path.exists() or path_or_repo_id.count("/") != 1 or looks_local:
        raise FileNotFoundError(f"{path_or_repo_id}: no such checkpoint file or folder, and not a hub id (owner/name)")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(path_or_repo_id, allow_patterns=["config.json", "*.safetensors", "*.json", "*.bin"]))


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    for file in WEIGHT_FILES:
        if (folder / file).exists():
            break
    else:
        raise FileNotFoundError(f"{folder}: no weights found (looked for {', '.join(WEIGHT_FILES)})")
    if file.endswith(".index.json"):
        shards = sorted(set(json.loads((folder / file).read_text())["weight_map"].values()))
    else:
        shards = [file]
    weights = {}
    for shard in shards:
        if shard.endswith(".safetensors"):
            weights.update(load_file(folder / shard))
        else:
            weights.update(torch.load(folder / shard, map_location="cpu", weights_only=True))
    return weights


def from_hf(path_or_repo_id: str) -> Phi:
    """A `Phi` holding the weights of a `PhiForCausalLM` checkpoint (local folder or hub id), in fp32."""
    folder = resolve(path_or_repo_id)
    config = config_from_hf(json.loads((folder / "config.json").read_text()), str(folder / "config.json"))
    with torch.device("meta"):
        model = Phi(config)
    state = state_dict_from_hf(read_weights(folder))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    model.init_rotary()
    return model


def to_hf(model: Phi, out_dir: str | Path, eos_id: int = 50256) -> Path:
    """Write `config.json` + `model.safetensors` that `transformers.PhiForCausalLM.from_pretrained` loads."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: folder exists and is not empty; choose a new output folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config_to_hf(model.config, eos_id), indent=2) + "\n")
    save_file(state_dict_to_hf(model.state_dict()), out / "model.safetensors", metadata={"format": "pt"})
    return out


def to_transformers(model: Phi, eos_id: int = 50256):
    """The same model as an in-memory `transformers.PhiForCausalLM` (needs `transformers`)."""
    import transformers

    hf = transformers.PhiForCausalLM(transformers.PhiConfig(**config_to_hf(model.config, eos_id)))
    hf.load_state_dict(state_dict_to_hf(model.state_dict()))
    return hf


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m phi1.hf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="PhiForCausalLM folder or hub id -> Lightning checkpoint of phi1")
    imp.add_argument("src", help="local folder with config.json and weights, or a hub id such as microsoft/phi-1")
    imp.add_argument("out", help="path of the .ckpt to write (must not exist)")
    exp = sub.add_parser("export", help="Lightning checkpoint of phi1 -> PhiForCausalLM folder")
    exp.add_argument("ckpt", help="a .ckpt written by `phi1.cli fit` or `phi1.hf import`")
    exp.add_argument("out_dir", help="folder to write (must be new or empty)")
    args = parser.parse_args(argv)
    try:
        if args.command == "import":
            save_model(from_hf(args.src), args.out)
            print(f"wrote {args.out}")
        else:
            print(f"wrote {to_hf(load_model(args.ckpt), args.out_dir)}")
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
