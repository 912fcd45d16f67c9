"""Throughput of the token-shard pipeline (paper §2.3's stream of documents joined by <|endoftext|>).

    python -m bench.shards [--tokenizer tokenizer.json] [--max-mb 12] [--workers 1 2] [--repeats 2]

Section "build": ``data_prep.build_shards`` end to end (JSONL parsing, encoding, hashing, writing) against
the bare ``Tokenizer.encode_batch`` of the same texts in the same process, both in tokens per second; the
goal is a ratio of at least 0.9 with one worker. The corpus is the running interpreter's standard library
sources (as in ``data_prep.demo_corpus``) written to a JSONL file; without ``--tokenizer`` a 4096-token
codegen-style tokenizer is trained on it first (not timed).

Section "load": batches of ``seq_len + 1`` tokens out of ``phi1.data.PackedDataModule``'s train loader (at 0
and 2 workers) against a raw memmap read of the same blocks into the same int64 array, in tokens per second.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data_prep.build_shards import build_shards
from data_prep.demo_corpus import standard_library_files
from data_prep.train_tokenizer import save_tokenizer, train_tokenizer
from phi1.data import PackedDataModule
from phi1.shards import open_shards
from phi1.tokenizer import load_tokenizer


def write_corpus_jsonl(files: list[Path], path: Path) -> list[str]:
    texts = [file.read_bytes().decode("utf-8") for file in files]
    with open(path, "w", encoding="utf-8") as out:
        for text in texts:
            out.write(json.dumps({"text": text}) + "\n")
    return texts


def bench_build(tokenizer_path: Path, corpus: Path, texts: list[str], workdir: Path, workers: list[int], repeats: int):
    """Tokens per second of bare encode_batch and of build_shards at each worker count: the best of
    ``repeats`` runs, interleaved so that a busy machine slows both alike."""
    tokenizer = load_tokenizer(tokenizer_path)
    tokenizer.encode_special_tokens = True  # as build_shards encodes
    best = dict.fromkeys(["bare", *workers], 0.0)
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = sum(len(encoding.ids) for encoding in tokenizer.encode_batch(texts, add_special_tokens=False))
        best["bare"] = max(best["bare"], tokens / (time.perf_counter() - start))
        for count in workers:
            start = time.perf_counter()
            manifest = build_shards(
                tokenizer_path, workdir / f"shards_{count}", [corpus], workers=count, overwrite=True
            )
            best[count] = max(best[count], manifest["num_tokens"] / (time.perf_counter() - start))
    print(f"bare encode_batch:         {best['bare']:12,.0f} tokens/s  ({tokens:,} tokens, {len(texts)} documents)")
    for count in workers:
        label = f"build_shards, {count} worker{'s' if count > 1 else ' '}:"
        print(f"{label:<27}{best[count]:12,.0f} tokens/s  ratio {best[count] / best['bare']:.3f}")


def bench_load(shards: Path, seq_len: int = 2048, batch_size: int = 8, batches: int = 200):
    """Tokens per second out of the DataModule vs reading the same blocks from the memmap by hand."""
    dm = PackedDataModule({str(shards): 1.0}, seq_len=seq_len, batch_size=batch_size)
    dm.setup()
    picks = dm.order.samples(0, batches * batch_size)
    (memmap,) = open_shards(shards)  # one shard: the raw read is a plain slice
    tokens = batches * batch_size * (seq_len + 1)

    start = time.perf_counter()
    for b in range(batches):
        rows = [memmap[i * seq_len : (i + 1) * seq_len + 1] for _, i in picks[b * batch_size : (b + 1) * batch_size]]
        torch.from_numpy(np.stack(rows).astype(np.int64))
    raw = tokens / (time.perf_counter() - start)
    print(f"raw memmap read:           {raw:12,.0f} tokens/s  ({batches} batches of {batch_size} x {seq_len + 1})")
    for workers in (0, 2):
        dm.num_workers = workers
        loader = iter(dm.train_dataloader())
        next(loader)  # worker start-up is not throughput
        start = time.perf_counter()
        for _ in range(batches):
            next(loader)
        rate = tokens / (time.perf_counter() - start)
        print(f"DataModule, {workers} workers:     {rate:12,.0f} tokens/s  ratio {rate / raw:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json (default: train a 4096-token one)")
    parser.add_argument("--max-mb", type=float, default=12.0, help="standard library text to use, in MB")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="worker counts to time")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement (the best is kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        corpus = workdir / "stdlib.jsonl"
        texts = write_corpus_jsonl(standard_library_files(int(args.max_mb * 1e6)), corpus)
        tokenizer_path = args.tokenizer
        if tokenizer_path is None:
            tokenizer_path = workdir / "tokenizer.json"
            save_tokenizer(train_tokenizer(texts, 4096, show_progress=False), tokenizer_path)
        print(f"== build: {sum(map(len, texts)) / 1e6:.1f} MB of Python in {len(texts)} documents")
        bench_build(tokenizer_path, corpus, texts, workdir, args.workers, args.repeats)
        print("== load")
        bench_load(workdir / f"shards_{args.workers[0]}")


if __name__ == "__main__":
    main()
