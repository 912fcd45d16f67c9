"""The phi-1 tokenizer: loading it, its end-of-text id, and a fingerprint for manifests.

phi-1 (paper §2) reuses the codegen-350M-mono tokenizer: GPT-2's byte-level BPE (50,257 tokens,
``<|endoftext|>`` = 50256) followed by 38 non-special added tokens for whitespace runs, in the order
CodeGen added them: 31, 30, ..., 2 spaces, then 9, 8, ..., 2 tabs (50,295 tokens in all). The added
tokens are matched before pre-tokenization, so an indentation of 4 spaces is one token.
``data_prep/train_tokenizer.py`` builds a smaller tokenizer with the same construction.
"""

import hashlib
import json
from pathlib import Path

from tokenizers import Tokenizer

EOS_TOKEN = "<|endoftext|>"
# CodeGen's whitespace tokens, in the order (and so with the ids) CodeGen added them.
WHITESPACE_TOKENS = [" " * n for n in range(31, 1, -1)] + ["\t" * n for n in range(9, 1, -1)]
HUB_TOKENIZERS = ("microsoft/phi-1", "Salesforce/codegen-350M-mono")


class TokenizerError(ValueError):
    """A tokenizer that cannot be loaded or lacks what phi-1 needs."""


def load_tokenizer(name_or_path: str | Path) -> Tokenizer:
    """Load a tokenizer from a ``tokenizer.json`` file, a folder holding one, or a Hugging Face Hub id.

    A name that is not an existing path and looks like ``owner/name`` (e.g. ``microsoft/phi-1``) is
    fetched from the Hub, which needs network access.
    """
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"tokenizer folder {name_or_path} holds no tokenizer.json")
    if path.is_file():
        try:
            return Tokenizer.from_file(str(path))
        except Exception as error:
            raise TokenizerError(f"{path} is not a valid tokenizer.json: {error}") from error
    if not _looks_like_hub_id(str(name_or_path)):
        raise TokenizerError(
            f"tokenizer {name_or_path} not found: expected a tokenizer.json file, a folder holding one, "
            f"or a Hugging Face Hub id such as {HUB_TOKENIZERS[0]}"
        )
    try:
        return Tokenizer.from_pretrained(str(name_or_path))
    except Exception as error:
        raise TokenizerError(
            f"could not fetch tokenizer {name_or_path} from the Hugging Face Hub ({error}); "
            "offline, pass the path of a local tokenizer.json instead"
        ) from error


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.endswith(".json")


def eos_id(tokenizer: Tokenizer) -> int:
    """The id of ``<|endoftext|>``, the token phi-1 places between documents."""
    token_id = tokenizer.token_to_id(EOS_TOKEN)
    if token_id is None:
        raise TokenizerError(f"tokenizer has no {EOS_TOKEN} token; phi-1 needs it to separate documents")
    return token_id


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    """sha256 of the tokenizer's canonical JSON (sorted keys, compact), the same for equal tokenizers."""
    canonical = json.dumps(json.loads(tokenizer.to_str()), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
