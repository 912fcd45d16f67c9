"""The phi-1 tokenizer: loading it, its end-of-text id, a fingerprint for manifests, and whether it fits a model.

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

from phi1.errors import ConfigError
from phi1.hub import resolve

EOS_TOKEN = "<|endoftext|>"
# CodeGen's whitespace tokens, in the order (and so with the ids) CodeGen added them.
WHITESPACE_TOKENS = [" " * n for n in range(31, 1, -1)] + ["\t" * n for n in range(9, 1, -1)]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")  # what a hub id downloads
VOCAB_PADDING = 1024


class TokenizerError(ConfigError):
    """A tokenizer that cannot be loaded or lacks what phi-1 needs."""


def load_tokenizer(name_or_path: str | Path) -> Tokenizer:
    """Load a tokenizer from a ``tokenizer.json`` file, a folder holding one, or a Hugging Face hub id such as
    ``microsoft/phi-1`` (fetched to the hub's cache; see `phi1.hub` for what counts as a hub id)."""
    try:
        path = resolve(name_or_path, "tokenizer", TOKENIZER_FILES)
    except FileNotFoundError as error:
        raise TokenizerError(f"{error}; expected a tokenizer.json file, a folder holding one, or a hub id") from None
    if path.is_dir():
        path = path / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"tokenizer folder {name_or_path} holds no tokenizer.json")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:
        raise TokenizerError(f"{path} is not a valid tokenizer.json: {error}") from error


def check_fits(tokenizer: Tokenizer, vocab_size: int, model: str, trained_with: str | None = None) -> None:
    """Refuse a tokenizer that is not the one `model` (a name for messages) was trained with: one with more tokens
    than the model has embedding rows, one whose hash differs from `trained_with` (the sha256 recorded at training,
    when known) or, without a record, one so much smaller that the model must have been trained with another:
    models pad their vocabulary by fewer than VOCAB_PADDING rows (phi-1 pads its 50,295 tokens to 51,200)."""
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > vocab_size:
        raise TokenizerError(
            f"the tokenizer has {size} tokens but {model} only {vocab_size} embedding rows: it is not the tokenizer "
            "the model was trained with"
        )
    if trained_with is not None and tokenizer_hash(tokenizer) != trained_with:
        raise TokenizerError(
            f"the tokenizer (sha256 {tokenizer_hash(tokenizer)[:12]}...) is not the one {model} was trained with "
            f"(sha256 {trained_with[:12]}...)"
        )
    if trained_with is None and vocab_size - size >= VOCAB_PADDING:
        raise TokenizerError(
            f"the tokenizer has {size} tokens but {model} {vocab_size} embedding rows, {vocab_size - size} more: "
            f"it was trained with another tokenizer (models pad their vocabulary by fewer than {VOCAB_PADDING} rows)"
        )


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
