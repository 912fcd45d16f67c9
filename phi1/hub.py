"""Where a model or tokenizer named by the user lives: a local file or folder, or a Hugging Face hub id.

One rule for the whole project (checkpoints, `--model.init_from`, tokenizers): an existing path is local. Anything
else of the form `owner/name` is a hub id, downloaded to the Hugging Face cache (`HF_HUB_OFFLINE=1` reads only
the cache), unless it looks like a local path (it ends in a file suffix such as `.ckpt` or `.json`, or its first
part is a folder here, as in `runs/phi1`): that is reported missing, and never sent to the hub.
"""

import re
from collections.abc import Sequence
from pathlib import Path

# The hub's repo ids: letters, digits, "-", "_" and "."; not starting or ending with "-" or ".", no "--" or "..".
HUB_ID = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
LOCAL_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors", ".json", ".jsonl", ".gz", ".yaml", ".model")


def is_hub_id(name: str | Path) -> bool:
    """Whether a name that is not an existing path would be looked up on the hub."""
    text = str(name)
    if not HUB_ID.match(text) or text.endswith(("-", ".")) or text.lower().endswith(LOCAL_SUFFIXES):
        return False
    return not Path(text).parent.is_dir()


def resolve(name: str | Path, what: str, files: Sequence[str]) -> Path:
    """The local path `name`, or the folder of hub id `name` downloaded to the Hugging Face cache (only the `files`
    patterns, e.g. ["config.json", "*.safetensors"]). FileNotFoundError names `what` was looked for, and why."""
    path = Path(name)
    if path.exists():
        return path
    if not is_hub_id(name):
        raise FileNotFoundError(f"{what} {name} not found: no such file or folder, and not a Hugging Face Hub id")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name), allow_patterns=list(files)))
    except Exception as error:  # offline, no such repo, a gated repo: all mean "give a local path"
        reason = " ".join(str(error).split())[:300]  # one line
        raise FileNotFoundError(
            f"{what} {name}: cannot fetch it from the Hugging Face Hub ({type(error).__name__}: {reason}); "
            "offline, give a local path"
        ) from error
