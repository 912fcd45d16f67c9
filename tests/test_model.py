import re
from dataclasses import asdict

import pytest
import torch

from phi1.costs import config_from_files, describe
from phi1.model import PRESETS, Phi, PhiConfig


@pytest.mark.parametrize("name, expected", [("phi-1", 1_418_270_720), ("phi-1-small", 356_794_368)])
def test_preset_parameter_counts_match_the_paper(name, expected):
    with torch.device("meta"):
        model = Phi(PhiConfig.from_name(name))
    assert model.num_params() == expected
    assert all(p.is_meta for p in model.parameters())


def test_phi1_flops_per_token_follow_palm_appendix_b():
    with torch.device("meta"):
        model = Phi(PhiConfig.from_name("phi-1"))
    assert model.flops_per_token() == 6 * 1_313_413_120 + 12 * 24 * 2048 * 2048
    assert round(model.flops_per_token() / 1e9, 2) == 9.09


def test_every_linear_has_a_bias_and_the_head_is_untied():
    model = Phi(PhiConfig.from_name("tiny"))
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4 * model.config.n_layer + 1
    assert all(m.bias is not None for m in linears)
    assert model.lm_head.weight.data_ptr() != model.embed_tokens.weight.data_ptr()


def test_rotary_touches_only_the_first_rotary_dims_of_each_head():
    torch.manual_seed(0)
    config = PhiConfig.from_name("tiny")
    model = Phi(config).eval()
    attn = model.layers[0].self_attn
    x = torch.randn(1, 5, config.n_embd)
    q = attn.qkv(x)[..., : config.n_embd].view(1, 5, config.n_head, config.head_dim).transpose(1, 2)
    from phi1.model import apply_rotary

    cos, sin = model.rope_cos[None, None, :5], model.rope_sin[None, None, :5]
    rotated = apply_rotary(q, cos, sin)
    assert torch.equal(rotated[..., config.rotary_dim :], q[..., config.rotary_dim :])
    assert torch.equal(rotated[:, :, 0], q[:, :, 0])  # position 0 is the identity rotation
    assert not torch.allclose(rotated[:, :, 1:, : config.rotary_dim], q[:, :, 1:, : config.rotary_dim])


def test_logits_are_causal_and_fp32():
    torch.manual_seed(0)
    model = Phi(PhiConfig.from_name("tiny")).eval()
    idx = torch.randint(0, 4096, (2, 12))
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 4096
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_kv_cache_decoding_equals_the_full_forward():
    torch.manual_seed(0)
    model = Phi(PhiConfig.from_name("tiny")).eval()
    idx = torch.randint(0, 4096, (2, 10))
    with torch.no_grad():
        full = model(idx)
        model.setup_caches(batch_size=2, max_len=16)
        prefix = model(idx[:, :6], cache_pos=0)
        steps = [model(idx[:, t : t + 1], cache_pos=t) for t in range(6, 10)]
        model.clear_caches()
    torch.testing.assert_close(torch.cat([prefix, *steps], dim=1), full, atol=1e-5, rtol=1e-5)


def test_meta_model_materializes_with_init_weights():
    with torch.device("meta"):
        model = Phi(PhiConfig.from_name("tiny"))
    model.to_empty(device="cpu")
    model.init_weights()
    assert model.layers[0].input_layernorm.weight.eq(1).all()
    assert model.lm_head.bias.eq(0).all()
    assert 0.015 < model.lm_head.weight.std().item() < 0.025
    assert torch.isfinite(model(torch.zeros(1, 4, dtype=torch.long))).all()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(n_embd=100, n_head=3), "n_embd=100 is not divisible by n_head=3"),
        (dict(n_layer=-1), "model.config.n_layer=-1: must be a positive integer"),
        (dict(n_layer=0), "model.config.n_layer=0"),
        (dict(vocab_size=2.5), "model.config.vocab_size=2.5"),
        (dict(attn_dropout=1.0), "model.config.attn_dropout=1.0: must lie in"),
        (dict(rotary_dim=80), "model.config.rotary_dim=80"),
        (dict(rope_base=float("inf")), "model.config.rope_base=inf"),
        (dict(preset="phi-2"), "model.config.preset='phi-2': unknown"),
    ],
)
def test_bad_config_values_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        PhiConfig(**overrides)


def test_a_preset_fills_the_fields_left_unset():
    small = PhiConfig(preset="phi-1-small", attn_dropout=0.1)
    assert (small.n_layer, small.n_embd, small.vocab_size, small.attn_dropout) == (20, 1024, 51200, 0.1)
    assert PhiConfig() == PhiConfig(**PRESETS["phi-1"])
    tiny = PhiConfig.from_name("tiny")
    assert PhiConfig(**asdict(tiny)) == tiny  # a checkpoint's resolved config loads back unchanged


def test_config_from_stacked_experiment_yamls_and_describe(repo_root):
    config = config_from_files(str(repo_root / "experiments" / "phi1.yaml"))
    assert config == PhiConfig.from_name("phi-1", attn_dropout=0.1, resid_dropout=0.1)
    assert "parameters: 1,418,270,720" in describe(config)
    small = config_from_files(*(str(repo_root / "experiments" / f) for f in ("phi1.yaml", "phi1-small.yaml")))
    assert small == PhiConfig.from_name("phi-1-small", attn_dropout=0.1, resid_dropout=0.1)
    assert config_from_files(str(repo_root / "experiments" / "tiny.yaml")) == PhiConfig.from_name("tiny")


def test_model_cli_prints_size_without_allocating(run_python, repo_root, capsys):
    experiments = repo_root / "experiments"
    out = run_python("-m", "phi1.model", str(experiments / "phi1.yaml"), str(experiments / "phi1-small.yaml"))
    assert "parameters: 356,794,368" in out.stdout
    assert "GFLOP" in out.stdout
    from phi1.costs import main  # the same command in this process

    with pytest.raises(SystemExit) as bad:
        main(["nope.yaml"])
    assert bad.value.code != 0 and "nope.yaml" in capsys.readouterr().err


def test_rotary_tables_stay_fp32_when_the_model_is_cast():
    model = Phi(PhiConfig.from_name("tiny")).to(torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert model.rope_cos.dtype == model.rope_sin.dtype == torch.float32
    torch.testing.assert_close(model.rope_cos, Phi(PhiConfig.from_name("tiny")).rope_cos)
