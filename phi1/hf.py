"""The Hugging Face layout of phi-1: `PhiForCausalLM`'s config and parameter names, mapped to and from `Phi`'s.

Pure conversion of dicts, no files: `phi1.checkpoint` reads and writes HF folders with it. The only differences
between the two parameter layouts are the `model.` prefix and our fused [q|k|v] projection, so conversion is a
rename plus a concatenation; the logits match to float precision. The tokenizer's HF files (tokenizer_config.json,
generation_config.json) are mapped here too, so that `transformers.AutoTokenizer` and vLLM load an export.
"""

import torch
from tokenizers import Tokenizer

from phi1.errors import ConfigError
from phi1.model import Phi, PhiConfig
from phi1.tokenizer import EOS_TOKEN
from phi1.tokenizer import eos_id as eos_of


def _field(hf: dict, name: str, source: str):
    if name not in hf:
        raise ConfigError(f"{source}: field {name!r} is missing; a PhiForCausalLM config.json has it")
    return hf[name]


def config_from_hf(hf: dict, source: str) -> PhiConfig:
    """PhiConfig from a `config.json` of model_type phi; refuses variants this architecture does not have."""
    rope = hf.get("rope_parameters") or {}
    n_head = _field(hf, "num_attention_heads", source)
    checks = {
        "model_type": (_field(hf, "model_type", source), "phi"),
        "hidden_act": (hf.get("hidden_act", "gelu_new"), "gelu_new"),
        "qk_layernorm": (hf.get("qk_layernorm", False), False),
        "tie_word_embeddings": (hf.get("tie_word_embeddings", False), False),
        "num_key_value_heads": (hf.get("num_key_value_heads") or n_head, n_head),
    }
    for field, (got, want) in checks.items():
        if got != want:
            raise ConfigError(f"{source}: field {field}={got!r}; phi-1's architecture needs {want!r}")
    hidden = _field(hf, "hidden_size", source)
    partial = rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 0.5))
    return PhiConfig(
        vocab_size=_field(hf, "vocab_size", source),
        block_size=_field(hf, "max_position_embeddings", source),
        n_layer=_field(hf, "num_hidden_layers", source),
        n_embd=hidden,
        n_head=n_head,
        mlp_dim=_field(hf, "intermediate_size", source),
        rotary_dim=int(hidden // n_head * partial),
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


def to_transformers(model: Phi, eos_id: int = 50256):
    """The same model as an in-memory `transformers.PhiForCausalLM` (needs `transformers`)."""
    import transformers

    hf = transformers.PhiForCausalLM(transformers.PhiConfig(**config_to_hf(model.config, eos_id)))
    hf.load_state_dict(state_dict_to_hf(model.state_dict()))
    return hf


def tokenizer_config_to_hf(tokenizer: Tokenizer, config: PhiConfig) -> dict:
    """tokenizer_config.json for the tokenizer.json beside it: a fast tokenizer with phi-1's special tokens, and no
    clean-up of spaces on decoding (it would change code: "x ," -> "x,")."""
    eos_of(tokenizer)  # it must have <|endoftext|>
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "model_max_length": config.block_size,
        "clean_up_tokenization_spaces": False,
    }


def generation_config_to_hf(tokenizer: Tokenizer) -> dict:
    """generation_config.json: generation stops at <|endoftext|>."""
    return {"bos_token_id": eos_of(tokenizer), "eos_token_id": eos_of(tokenizer)}
