"""Build the small offline demo corpus: phi-1's three kinds of training data in miniature (paper §2).

    python -m data_prep.demo_corpus --out DIR [--vocab-size 4096] [--max-mb 16] [--workers 1]

Writes, on a fresh machine without network access:

    DIR/tokenizer.json   a codegen-style tokenizer (data_prep.train_tokenizer) trained on the code below
    DIR/code/            shards of "code-language" data: the running interpreter's standard library
                         sources (*.py; test suites and site-packages left out), standing in for the
                         filtered Stack + StackOverflow (§2.1)
    DIR/textbooks/       shards of data_prep/demo_data/textbooks.jsonl: short textbook sections, prose
                         interleaved with Python, in the style of the synthetic textbooks (§2.2)
    DIR/exercises/       shards of data_prep/demo_data/exercises.jsonl, CodeExercises-style: a function
                         signature and docstring as the prompt, its body as the completion, with a loss
                         mask that leaves the prompt out (§2.2, finetuning)

The bundled samples were written for this project. The standard library sample is deterministic for a
given interpreter: files are taken in the order of the sha256 of their relative path while they fit in
``--max-mb``, then sorted. Rerunning keeps what is complete and finishes what was interrupted; a folder
built with another tokenizer is rebuilt.
"""

import argparse
import hashlib
import os
import sys
import sysconfig
from pathlib import Path

from data_prep.build_shards import build_shards
from data_prep.train_tokenizer import save_tokenizer, train_tokenizer
from phi1.errors import ConfigError
from phi1.shards import MANIFEST_NAME, read_manifest
from phi1.tokenizer import load_tokenizer, tokenizer_hash

DEMO_DATA = Path(__file__).parent / "demo_data"
EXCLUDED_FOLDERS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
CODE_SHARD_TOKENS = 1_000_000  # small shards, so the demo has several to load


def standard_library_files(max_bytes: int) -> list[Path]:
    """A deterministic sample of at most ``max_bytes`` of the standard library's UTF-8 *.py files, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    candidates = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in EXCLUDED_FOLDERS and not name.startswith(".")]
        candidates += [Path(folder) / name for name in names if name.endswith(".py")]
    chosen, total = [], 0
    for path in sorted(
        candidates, key=lambda path: hashlib.sha256(path.relative_to(root).as_posix().encode()).digest()
    ):
        data = path.read_bytes()
        if total + len(data) > max_bytes or not _is_utf8(data):
            continue
        chosen.append(path)
        total += len(data)
    return sorted(chosen)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def build_demo_corpus(out: Path, vocab_size: int = 4096, max_bytes: int = 16_000_000, workers: int = 1) -> dict:
    """Build (or finish) the demo folders; returns each part's manifest by folder name."""
    code_files = standard_library_files(max_bytes)
    if not code_files:
        raise ConfigError(f"no standard library sources found under {sysconfig.get_paths()['stdlib']}")
    tokenizer_path = out / "tokenizer.json"
    if tokenizer_path.exists():
        print(f"{tokenizer_path}: kept")
    else:
        print(f"training a {vocab_size}-token tokenizer on {len(code_files)} standard library files")
        documents = (path.read_bytes().decode("utf-8") for path in code_files)
        save_tokenizer(train_tokenizer(documents, vocab_size), tokenizer_path)
    expected_hash = tokenizer_hash(load_tokenizer(tokenizer_path))

    parts = {
        "code": dict(inputs=code_files, shard_tokens=CODE_SHARD_TOKENS),
        "textbooks": dict(inputs=[DEMO_DATA / "textbooks.jsonl"], field="text"),
        "exercises": dict(inputs=[DEMO_DATA / "exercises.jsonl"], field="completion", prompt_field="prompt"),
    }
    manifests = {}
    for name, settings in parts.items():
        folder = out / name
        rebuild = False
        if (folder / MANIFEST_NAME).exists():
            manifest = read_manifest(folder)
            if manifest["tokenizer"]["sha256"] == expected_hash:
                print(f"{folder}: kept")
                manifests[name] = manifest
                continue
            print(f"{folder}: built with another tokenizer; rebuilding")
            rebuild = True
        manifests[name] = build_shards(tokenizer_path, folder, workers=workers, overwrite=rebuild, **settings)
    return manifests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to build the demo corpus in")
    parser.add_argument("--vocab-size", type=int, default=4096, help="BPE tokens + <|endoftext|>")
    parser.add_argument("--max-mb", type=float, default=16.0, help="most standard library source to use, in MB")
    parser.add_argument("--workers", type=int, default=1, help="encoding processes for build_shards")
    args = parser.parse_args(argv)
    try:
        manifests = build_demo_corpus(args.out, args.vocab_size, int(args.max_mb * 1e6), args.workers)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"demo corpus in {args.out} (tokenizer.json: {manifests['code']['vocab_size']} tokens)")
    for name, manifest in manifests.items():
        mask = ", loss mask on completions" if manifest["loss_mask"] else ""
        print(
            f"  {name + '/':<11} {manifest['num_documents']:>6,} documents {manifest['num_tokens']:>11,} tokens "
            f"in {len(manifest['shards'])} shard(s){mask}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
