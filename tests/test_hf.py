import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from phi1.checkpoint import load_model, save_model  # noqa: E402
from phi1.hf import from_hf, to_hf  # noqa: E402
from phi1.model import Phi, PhiConfig  # noqa: E402


def small_hf_config(**overrides):
    kwargs = dict(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=64,
        partial_rotary_factor=0.5,
        layer_norm_eps=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attention_dropout=0.0,
        tie_word_embeddings=False,
    )
    return transformers.PhiConfig(**{**kwargs, **overrides})


def randomized(model):
    """Random non-zero biases and LayerNorm params too, so a dropped bias or a swapped norm shows."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1 if p.dim() == 1 else 0.05)
    return model


def test_hf_model_converted_in_gives_equal_logits(tmp_path):
    hf = randomized(transformers.PhiForCausalLM(small_hf_config())).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = from_hf(str(tmp_path / "hf")).eval()
    idx = torch.randint(0, 512, (2, 33))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits.float(), atol=1e-5, rtol=1e-5)
    assert ours.config.rotary_dim == 16 and ours.config.head_dim == 32


def test_our_model_converted_out_loads_in_transformers_with_equal_logits(tmp_path):
    ours = randomized(
        Phi(PhiConfig(vocab_size=512, block_size=64, n_layer=3, n_embd=128, n_head=4, mlp_dim=512, rotary_dim=16))
    ).eval()
    to_hf(ours, tmp_path / "out")
    hf = transformers.PhiForCausalLM.from_pretrained(tmp_path / "out").eval()
    idx = torch.randint(0, 512, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits.float(), ours(idx), atol=1e-5, rtol=1e-5)


def test_released_phi1_config_maps_to_the_phi1_preset(tmp_path):
    released = small_hf_config(
        vocab_size=51200,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=24,
        num_attention_heads=32,
        max_position_embeddings=2048,
    ).to_dict()
    from phi1.hf import config_from_hf

    assert config_from_hf(released, "config.json") == PhiConfig.from_name("phi-1")


def test_variants_this_architecture_lacks_are_refused(tmp_path):
    hf = transformers.PhiForCausalLM(small_hf_config(qk_layernorm=True))
    hf.save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError, match="qk_layernorm"):
        from_hf(str(tmp_path / "hf"))


def test_import_and_export_clis_round_trip(tmp_path, run_python):
    hf = randomized(transformers.PhiForCausalLM(small_hf_config())).eval()
    hf.save_pretrained(tmp_path / "hf")
    run_python("-m", "phi1.hf", "import", str(tmp_path / "hf"), str(tmp_path / "m.ckpt"))
    run_python("-m", "phi1.hf", "export", str(tmp_path / "m.ckpt"), str(tmp_path / "back"))
    again = transformers.PhiForCausalLM.from_pretrained(tmp_path / "back").eval()
    idx = torch.randint(0, 512, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(again(idx).logits, hf(idx).logits, atol=1e-6, rtol=1e-6)
    assert json.loads((tmp_path / "back" / "config.json").read_text())["model_type"] == "phi"
    refused = run_python("-m", "phi1.hf", "export", str(tmp_path / "m.ckpt"), str(tmp_path / "back"), check=False)
    assert refused.returncode == 2 and "not empty" in refused.stderr
    missing = run_python("-m", "phi1.hf", "import", str(tmp_path / "absent"), str(tmp_path / "x.ckpt"), check=False)
    assert missing.returncode == 2 and "absent" in missing.stderr


def test_checkpoint_save_refuses_to_overwrite(tmp_path):
    model = Phi(PhiConfig.from_name("tiny"))
    save_model(model, tmp_path / "a.ckpt")
    with pytest.raises(FileExistsError):
        save_model(model, tmp_path / "a.ckpt")
    torch.testing.assert_close(load_model(str(tmp_path / "a.ckpt")).state_dict(), model.state_dict())


def test_in_memory_twin_gives_equal_logits():
    from phi1.hf import to_transformers

    ours = randomized(Phi(PhiConfig.from_name("tiny", vocab_size=512, block_size=64))).eval()
    twin = to_transformers(ours, eos_id=0).eval()
    idx = torch.randint(0, 512, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(twin(idx).logits.float(), ours(idx), atol=1e-5, rtol=1e-5)


def test_a_missing_local_checkpoint_is_not_looked_up_on_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_model(str(tmp_path / "step001000.ckpt"))
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_model("runs/step001000.ckpt")
