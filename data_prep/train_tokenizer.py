"""Train a codegen-style tokenizer for corpora (or demos) where the released one cannot be used.

    python -m data_prep.train_tokenizer --out tokenizer.json --vocab-size N [INPUT ...] [--field text]
        [--overwrite]

phi-1 (paper §2) uses the codegen-350M-mono tokenizer unchanged; this builds one the same way, only from
our own text and at a vocabulary size of our choosing: GPT-2 byte-level BPE (ByteLevel pre-tokenizer
without a prefix space, ByteLevel decoder, all 256 byte symbols in the alphabet, so any text round-trips
exactly), then ``<|endoftext|>`` (special), then CodeGen's 38 whitespace tokens (non-special, matched
before pre-tokenization). ``--vocab-size`` counts the BPE tokens and ``<|endoftext|>``, like GPT-2's
50,257; the 38 whitespace tokens come on top, so ids run: BPE tokens, ``<|endoftext|>``, 31..2 spaces,
9..2 tabs. Inputs are read as by ``data_prep.build_shards`` (JSONL, Parquet, text files, folders).
Training is deterministic for the same inputs.
"""

import argparse
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from data_prep.documents import list_input_files, read_file_documents
from phi1.errors import ConfigError
from phi1.tokenizer import EOS_TOKEN, WHITESPACE_TOKENS

MIN_VOCAB_SIZE = 257  # the 256 byte symbols and <|endoftext|>
# Runs the whitespace tokens take before BPE sees the text; training skips them in the same way.
WHITESPACE_RUN = re.compile(r" {2,}|\t{2,}")


def train_tokenizer(documents: Iterable[str], vocab_size: int, show_progress: bool = True) -> Tokenizer:
    """Train byte-level BPE to ``vocab_size`` tokens (``<|endoftext|>`` included), then add CodeGen's
    whitespace tokens. A corpus with too few distinct merges gives a smaller vocabulary."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise ConfigError(f"--vocab-size must be at least {MIN_VOCAB_SIZE} (256 byte symbols + {EOS_TOKEN})")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,  # <|endoftext|> is added after the BPE tokens, as in GPT-2
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    chars = 0

    def pieces():  # each document as the pieces BPE will see: whitespace runs become added tokens, not merges
        nonlocal chars
        for document in documents:
            chars += len(document)
            yield WHITESPACE_RUN.split(document)

    tokenizer.train_from_iterator(pieces(), trainer)
    if chars == 0:
        raise ConfigError("the inputs hold no text to train a tokenizer on")
    tokenizer.add_special_tokens([AddedToken(EOS_TOKEN, special=True, normalized=False)])
    tokenizer.add_tokens([AddedToken(run, special=False, normalized=False) for run in WHITESPACE_TOKENS])
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, out: Path) -> None:
    """Write tokenizer.json under a temporary name and rename it, so ``out`` is never half-written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".tmp")
    tokenizer.save(str(temporary), pretty=True)
    os.replace(temporary, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="JSONL (.jsonl, .jsonl.gz), Parquet or text files, or folders")
    parser.add_argument("--out", required=True, type=Path, help="tokenizer.json to write")
    parser.add_argument("--vocab-size", required=True, type=int, help="BPE tokens + <|endoftext|> (GPT-2: 50257)")
    parser.add_argument("--field", default="text", help="record field holding the text in JSONL/Parquet inputs")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    try:
        if args.out.exists() and not args.overwrite:
            raise ConfigError(f"{args.out} already exists; pass --overwrite to replace it")
        files = list_input_files(args.inputs)
        documents = (document for path in files for document in read_file_documents(path, args.field))
        tokenizer = train_tokenizer(documents, args.vocab_size)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    save_tokenizer(tokenizer, args.out)
    print(f"{args.out}: {tokenizer.get_vocab_size(with_added_tokens=True)} tokens, trained on {len(files)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
