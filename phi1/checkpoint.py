"""Model weights in and out: this project's Lightning checkpoints and Hugging Face `PhiForCausalLM` folders.

    python -m phi1.checkpoint import microsoft/phi-1 phi-1.ckpt           # HF folder or hub id -> phi1 .ckpt
    python -m phi1.checkpoint export last.ckpt hf_out/ --tokenizer tok.json   # phi1 .ckpt -> HF folder

A checkpoint written by `phi1.cli fit` holds the LightningModule's state (`model.` + the names of `Phi`), its
hyperparameters, whose `config` is the `PhiConfig` as a plain dict, and the DataModule's state, whose data
fingerprint records the sha256 of the shards' tokenizer. `save_model` writes the same layout, weights only, so
imported Hugging Face weights are a checkpoint like any other. An export holds config.json, model.safetensors,
tokenizer.json, tokenizer_config.json and generation_config.json: a folder that `transformers`
(`AutoModelForCausalLM`, `AutoTokenizer`) and vLLM load as it is. The mapping between the layouts is `phi1.hf`.
"""

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from tokenizers import Tokenizer

from phi1.errors import ConfigError
from phi1.hf import (
    config_from_hf,
    config_to_hf,
    generation_config_to_hf,
    state_dict_from_hf,
    state_dict_to_hf,
    tokenizer_config_to_hf,
)
from phi1.hub import resolve
from phi1.model import Phi, PhiConfig
from phi1.tokenizer import check_fits, eos_id, load_tokenizer

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
HUB_FILES = ("*.json", "*.safetensors", "*.bin")  # what a hub id downloads: configs, tokenizer and weights


def load_model(source: str | Path, map_location: str = "cpu") -> Phi:
    """`Phi` from a phi1 `.ckpt`, or from a `PhiForCausalLM` folder or hub id (in fp32)."""
    return load_checkpoint(source, map_location)[0]


def load_checkpoint(source: str | Path, map_location: str = "cpu") -> tuple[Phi, str | None]:
    """(`Phi`, the sha256 of the tokenizer it was trained with where the checkpoint records it, else None)."""
    path = resolve(source, "checkpoint", HUB_FILES)
    if (path / "checkpoint").is_dir():  # Lightning's DeepSpeedStrategy writes a folder; fp32 weights need ZeRO's merge
        raise ConfigError(
            f"{path} is a DeepSpeed checkpoint folder: convert it to one file first with lightning.pytorch.utilities."
            f"deepspeed.convert_zero_checkpoint_to_fp32_state_dict('{path}', 'model.ckpt')"
        )
    if path.is_dir():
        return load_hf(path), None
    try:  # mmap: no copy of the optimizer state
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except Exception as error:  # truncated, not a torch file, not a zip archive
        raise ConfigError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from None
    try:
        config = PhiConfig(**ckpt["hyper_parameters"]["config"])
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{path}: not a phi1 checkpoint (hyper_parameters.config / state_dict: {e})") from e
    with torch.device("meta"):
        model = Phi(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.init_rotary()
    return model, _recorded_tokenizer(ckpt)


def _recorded_tokenizer(ckpt: dict) -> str | None:
    """The tokenizer sha256 in a DataModule's data fingerprint (Lightning stores its state under its class name)."""
    for value in ckpt.values():
        if isinstance(value, dict) and isinstance(fingerprint := value.get("fingerprint"), dict):
            return fingerprint.get("tokenizer_sha256")
    return None


def save_model(model: Phi, path: str | Path) -> Path:
    """Write a weights-only phi1 checkpoint; refuses to overwrite."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: already exists; choose a new path")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model." + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"config": asdict(model.config)}}, path)
    return path


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of a Hugging Face folder: safetensors or pytorch_model.bin, sharded or not."""
    from safetensors.torch import load_file

    file = next((name for name in WEIGHT_FILES if (folder / name).exists()), None)
    if file is None:
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


def load_hf(folder: str | Path) -> Phi:
    """A `Phi` holding the weights of a local `PhiForCausalLM` folder, in fp32."""
    file = Path(folder) / "config.json"
    try:
        hf = json.loads(file.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder}: no config.json; expected a phi1 .ckpt or a PhiForCausalLM folder") from None
    except ValueError as error:
        raise ConfigError(f"{file}: not valid JSON ({error})") from None
    with torch.device("meta"):
        model = Phi(config_from_hf(hf, str(file)))
    state = state_dict_from_hf(read_hf_weights(Path(folder)))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    model.init_rotary()
    return model


def save_hf(model: Phi, out_dir: str | Path, tokenizer: Tokenizer) -> Path:
    """Write a folder that `transformers` and vLLM serve: the model, its tokenizer (`phi1.tokenizer.check_fits` says
    whether it is the model's) and the generation config. The folder must be new or empty; it appears whole or not
    at all."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and is not an empty folder; choose a new output folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files = {
            "config.json": config_to_hf(model.config, eos_id(tokenizer)),
            "generation_config.json": generation_config_to_hf(tokenizer),
            "tokenizer_config.json": tokenizer_config_to_hf(tokenizer, model.config),
        }
        for name, content in files.items():
            (partial / name).write_text(json.dumps(content, indent=2) + "\n")
        tokenizer.save(str(partial / "tokenizer.json"))
        save_file(state_dict_to_hf(model.state_dict()), partial / "model.safetensors", metadata={"format": "pt"})
        mode = (partial / "config.json").stat().st_mode & 0o666  # what the umask gives a new file
        (partial / "model.safetensors").chmod(mode)  # safetensors writes 0600
        partial.chmod(mode | (mode & 0o444) >> 2)  # and mkdtemp makes 0700: a served folder is read by others
        os.replace(partial, out)  # onto a missing or empty folder
    except BaseException:
        for file in partial.iterdir():
            file.unlink()
        partial.rmdir()
        raise
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m phi1.checkpoint", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="PhiForCausalLM folder or hub id -> Lightning checkpoint of phi1")
    imp.add_argument("src", help="local folder with config.json and weights, or a hub id such as microsoft/phi-1")
    imp.add_argument("out", help="path of the .ckpt to write (must not exist)")
    exp = sub.add_parser("export", help="Lightning checkpoint of phi1 -> PhiForCausalLM folder with its tokenizer")
    exp.add_argument("ckpt", help="a .ckpt written by `phi1.cli fit` or `phi1.checkpoint import`")
    exp.add_argument("out_dir", help="folder to write (must be new or empty)")
    exp.add_argument(
        "--tokenizer", required=True, help="the tokenizer the model was trained with: tokenizer.json, folder or hub id"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "import":
            save_model(load_hf(resolve(args.src, "PhiForCausalLM folder", HUB_FILES)), args.out)
            print(f"wrote {args.out}")
        else:
            model, trained_with = load_checkpoint(args.ckpt)
            tokenizer = load_tokenizer(args.tokenizer)
            check_fits(tokenizer, model.config.vocab_size, args.ckpt, trained_with)
            print(f"wrote {save_hf(model, args.out_dir, tokenizer)}")
    except (OSError, ValueError, RuntimeError) as e:  # ConfigError (TokenizerError among them) is a ValueError
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
