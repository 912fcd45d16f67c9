"""Hugging Face interop: the pure mapping (phi1.hf), HF folders in and out (phi1.checkpoint), the import/export CLI,
and an export that transformers loads and decodes exactly as phi1 does."""

import json
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from phi1.checkpoint import load_checkpoint, load_hf, load_model, main, save_hf, save_model  # noqa: E402
from phi1.errors import ConfigError  # noqa: E402
from phi1.generate import generate  # noqa: E402
from phi1.hf import config_from_hf, to_transformers  # noqa: E402
from phi1.hub import is_hub_id  # noqa: E402
from phi1.model import Phi, PhiConfig  # noqa: E402
from phi1.tokenizer import TokenizerError, eos_id, load_tokenizer  # noqa: E402


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
    ours = load_model(str(tmp_path / "hf")).eval()
    idx = torch.randint(0, 512, (2, 33))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits.float(), atol=1e-5, rtol=1e-5)
    assert ours.config.rotary_dim == 16 and ours.config.head_dim == 32


def test_released_phi1_config_maps_to_the_phi1_preset():
    released = small_hf_config(
        vocab_size=51200,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=24,
        num_attention_heads=32,
        max_position_embeddings=2048,
    ).to_dict()
    assert config_from_hf(released, "config.json") == PhiConfig.from_name("phi-1")


def test_variants_this_architecture_lacks_are_refused(tmp_path):
    hf = transformers.PhiForCausalLM(small_hf_config(qk_layernorm=True))
    hf.save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError, match="qk_layernorm"):
        load_hf(tmp_path / "hf")


@pytest.fixture
def exported(tmp_path, code_tokenizer):
    """A random phi1 model sized for the test tokenizer (1,038 tokens padded to 1,088 rows), saved as a .ckpt and
    exported through the CLI: (model, tokenizer, export folder)."""
    torch.manual_seed(0)
    model = Phi(PhiConfig.from_name("tiny", vocab_size=1088, block_size=128)).eval()
    with torch.no_grad():  # larger weights: peaked, varied next-token choices
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    save_model(model, tmp_path / "m.ckpt")
    out = tmp_path / "hf"
    export = [sys.executable, "-m", "phi1.checkpoint", "export", str(tmp_path / "m.ckpt"), str(out)]
    subprocess.run([*export, "--tokenizer", str(code_tokenizer)], check=True, capture_output=True)
    return model, load_tokenizer(code_tokenizer), out


def test_an_export_loads_in_transformers_and_decodes_the_same_tokens_as_phi1(exported):
    model, tokenizer, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    eos = eos_id(tokenizer)
    assert hf_tokenizer.eos_token_id == eos and hf_model.generation_config.eos_token_id == eos
    prompt = 'def fib(n):\n    """Return the n-th Fibonacci number."""\n    if n < 2:\n        return n ,  x\n'
    ids = tokenizer.encode(prompt).ids
    assert hf_tokenizer(prompt)["input_ids"] == ids and hf_tokenizer.decode(ids) == prompt  # no space clean-up
    ours = generate(model, [ids], 24, eos)[0]
    theirs = hf_model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)[0, len(ids) :].tolist()
    assert theirs[: len(ours)] == ours and (len(theirs) == len(ours) or theirs[len(ours)] == eos)
    assert hf_tokenizer.decode(theirs, skip_special_tokens=True) == tokenizer.decode(ours)


def cli(capsys, *argv) -> tuple[int, str]:
    """`python -m phi1.checkpoint ARGV` in this process: (exit status, its stderr)."""
    capsys.readouterr()  # what came before
    try:
        main(list(map(str, argv)))
        status = 0
    except SystemExit as exit:
        status = exit.code
    return status, capsys.readouterr().err


def test_import_and_export_clis_round_trip(tmp_path, run_python, code_tokenizer, capsys):
    hf = randomized(transformers.PhiForCausalLM(small_hf_config(vocab_size=1088))).eval()
    hf.save_pretrained(tmp_path / "hf")
    run_python("-m", "phi1.checkpoint", "import", str(tmp_path / "hf"), str(tmp_path / "m.ckpt"))  # a real process
    export = ["export", tmp_path / "m.ckpt", tmp_path / "back", "--tokenizer", code_tokenizer]
    assert cli(capsys, *export)[0] == 0
    again = transformers.PhiForCausalLM.from_pretrained(tmp_path / "back").eval()
    idx = torch.randint(0, 1088, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(again(idx).logits, hf(idx).logits, atol=1e-6, rtol=1e-6)
    assert json.loads((tmp_path / "back" / "config.json").read_text())["model_type"] == "phi"
    status, err = cli(capsys, *export)
    assert status == 2 and "not an empty folder" in err
    status, err = cli(capsys, *export[:3])
    assert status == 2 and "--tokenizer" in err
    status, err = cli(capsys, "import", tmp_path / "absent", tmp_path / "x.ckpt")
    assert status == 2 and "absent not found" in err


def test_a_config_json_missing_a_field_is_one_line_naming_file_and_field(tmp_path, capsys):
    transformers.PhiForCausalLM(small_hf_config()).save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    del config["num_attention_heads"]
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    status, err = cli(capsys, "import", tmp_path / "hf", tmp_path / "x.ckpt")
    assert status == 2 and err == (
        f"error: {tmp_path / 'hf' / 'config.json'}: field 'num_attention_heads' is missing; "
        "a PhiForCausalLM config.json has it\n"
    )
    assert not (tmp_path / "x.ckpt").exists()


def test_an_export_with_a_tokenizer_that_does_not_fit_is_refused(tmp_path, code_tokenizer, capsys):
    save_model(Phi(PhiConfig.from_name("tiny", vocab_size=4160)), tmp_path / "big.ckpt")  # the demo model's rows
    status, err = cli(capsys, "export", tmp_path / "big.ckpt", tmp_path / "out", "--tokenizer", code_tokenizer)
    assert status == 2 and "trained with another tokenizer" in err
    assert not (tmp_path / "out").exists()


def test_a_failed_export_leaves_no_folder(tmp_path):
    from tokenizers import Tokenizer, models

    model = Phi(PhiConfig.from_name("tiny", vocab_size=1088))
    with pytest.raises(TokenizerError):  # a tokenizer without <|endoftext|> fails half-way through the writing
        save_hf(model, tmp_path / "out", Tokenizer(models.BPE()))
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_checkpoint_save_refuses_to_overwrite_and_loads_back(tmp_path):
    model = Phi(PhiConfig.from_name("tiny"))
    save_model(model, tmp_path / "a.ckpt")
    with pytest.raises(FileExistsError):
        save_model(model, tmp_path / "a.ckpt")
    loaded, trained_with = load_checkpoint(str(tmp_path / "a.ckpt"))
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())
    assert trained_with is None  # a weights-only checkpoint records no tokenizer


def test_a_truncated_checkpoint_is_a_clear_error(tmp_path):
    save_model(Phi(PhiConfig.from_name("tiny")), tmp_path / "a.ckpt")
    data = (tmp_path / "a.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.ckpt: not a readable checkpoint"):
        load_model(tmp_path / "cut.ckpt")


def test_in_memory_twin_gives_equal_logits():
    ours = randomized(Phi(PhiConfig.from_name("tiny", vocab_size=512, block_size=64))).eval()
    twin = to_transformers(ours, eos_id=0).eval()
    idx = torch.randint(0, 512, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(twin(idx).logits.float(), ours(idx), atol=1e-5, rtol=1e-5)


def test_one_rule_tells_local_paths_from_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert is_hub_id("microsoft/phi-1") and is_hub_id("Salesforce/codegen-350M-mono")
    for local in ("runs/step001000.ckpt", "runs/phi1", "tok.json", "a/b/c", "phi-1", "x/y.safetensors", "a--b/c"):
        assert not is_hub_id(local), local
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_model("runs/step001000.ckpt")
    with pytest.raises(TokenizerError, match="runs/tok not found: no such file or folder"):
        load_tokenizer("runs/tok")


def test_a_hub_id_offline_is_one_clear_error_for_models_and_tokenizers(run_python, tmp_path):
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    for code in (
        "from phi1.checkpoint import load_model; load_model('microsoft/phi-1')",
        "from phi1.tokenizer import load_tokenizer; load_tokenizer('microsoft/phi-1')",
    ):
        process = run_python("-c", code, check=False, env=offline)
        assert process.returncode != 0
        assert "microsoft/phi-1: cannot fetch it from the Hugging Face Hub" in process.stderr
        assert "offline, give a local path" in process.stderr


def test_the_hf_mapping_imports_no_file_handling():
    """phi1.hf is the pure mapping; loading and saving live in phi1.checkpoint, which uses it (no import cycle)."""
    code = "import sys, phi1.hf; print('phi1.checkpoint' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_a_deepspeed_checkpoint_folder_says_how_to_convert_it(tmp_path):
    folder = tmp_path / "last.ckpt"
    (folder / "checkpoint").mkdir(parents=True)  # Lightning's DeepSpeedStrategy layout
    with pytest.raises(ConfigError, match=f"{folder} is a DeepSpeed checkpoint folder: convert it"):
        load_model(folder)
