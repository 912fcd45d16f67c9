"""Model weights in and out of this project's Lightning checkpoints.

A checkpoint written by `phi1.cli fit` holds the LightningModule's state (`model.` + the names of `Phi`)
and its hyperparameters, whose `config` is the `PhiConfig` as a plain dict. `save_model` writes the same
layout, weights only, so imported Hugging Face weights are a checkpoint like any other.
"""

from dataclasses import asdict
from pathlib import Path

import torch

from phi1.model import Phi, PhiConfig


def load_model(path_or_repo_id: str, map_location: str = "cpu") -> Phi:
    """`Phi` from a phi1 `.ckpt`, or from a `PhiForCausalLM` folder or hub id."""
    path = Path(path_or_repo_id)
    if not path.is_file():
        from phi1.hf import from_hf

        return from_hf(path_or_repo_id)
    ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=True)  # no copy of optimizer state
    try:
        config = PhiConfig(**ckpt["hyper_parameters"]["config"])
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a phi1 checkpoint (hyper_parameters.config / state_dict: {e})") from e
    with torch.device("meta"):
        model = Phi(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.init_rotary()
    return model


def save_model(model: Phi, path: str | Path) -> Path:
    """Write a weights-only phi1 checkpoint; refuses to overwrite."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: already exists; choose a new path")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model." + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"config": asdict(model.config)}}, path)
    return path
