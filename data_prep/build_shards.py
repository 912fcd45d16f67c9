"""Tokenize a corpus into packed token shards: paper §2.3's stream of documents joined by <|endoftext|>.

    python -m data_prep.build_shards --tokenizer PATH_OR_HUB_ID --out DIR [INPUT ...]
        [--field text] [--prompt-field prompt] [--hf-dataset NAME [--hf-config C] [--hf-split train]]
        [--workers N] [--shard-tokens N] [--dtype auto|uint16|uint32] [--overwrite]

The shard format is documented in ``phi1/shards.py``; each document is followed by one EOS.

Inputs are read by ``data_prep/documents.py``, in a fixed order whatever the worker count: JSONL, Parquet,
plain-text files and folders of them, and a Hugging Face dataset streamed with ``--hf-dataset``.

With ``--prompt-field`` each record is a finetuning exercise (paper §2.2, CodeExercises): the document is
``record[prompt_field] + record[field]`` (prompt, then completion), the two encoded separately, and a
loss mask is written with 0 for prompt tokens, 1 for completion tokens and the EOS.

A literal ``<|endoftext|>`` inside a document is tokenized as plain text, so EOS ids mark exactly the
document ends.

Interrupted builds resume. Each shard is written under a ``.tmp`` name and renamed when complete, then
recorded by a line appended to ``build_state.jsonl`` (whose first line holds the build settings) with the
number of documents it ends at and a sha256 of all document text read so far. A rerun with the same settings
keeps the recorded shards (checked against their sha256), re-reads and hashes the documents they hold without
tokenizing them, and, if that hash matches, carries on from there; if anything differs (settings, inputs,
shard files) it starts clean. ``manifest.json`` is written last, so a folder without it is never a complete
build.

Nothing the user made is lost. Only the files ``build_state.jsonl`` records (and the shard in progress) are
ever deleted; a folder holding shard files this builder did not record is refused. A complete build is replaced
only with ``--overwrite``, and only once its replacement is complete: the new build is made (and resumed, if
interrupted) in ``DIR/.overwrite/``, then swapped in, so a bad input line leaves the previous build whole.

Bad input (malformed JSON, a missing field, an empty corpus, a dtype too narrow for the tokenizer) ends with
a message naming the file and line and exit status 2.
"""

import argparse
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from data_prep.documents import (
    Document,
    DocumentStream,
    HubDataset,
    file_sha256,
    list_input_files,
    update_document_hash,
)
from phi1.errors import ConfigError
from phi1.shards import (
    DEFAULT_SHARD_TOKENS,
    DTYPES,
    FORMAT,
    MANIFEST_NAME,
    ShardFormatError,
    dtype_for_vocab,
    mask_file_name,
    sampled_sha256,
    shard_file_name,
)
from phi1.tokenizer import eos_id, load_tokenizer, tokenizer_hash

STATE_NAME = "build_state.jsonl"  # the build settings, then one line per completed shard
STAGING_NAME = ".overwrite"  # a replacement build in progress, swapped in when complete
REPLACING_NAME = "replacing.json"  # in the staging folder: the files of the build being replaced
CHUNK_CHARS = 1 << 20  # documents are sent to the encoder in chunks of about this many characters
CHUNK_DOCUMENTS = 4096  # ... or this many documents
CHUNKS_IN_FLIGHT_PER_WORKER = 2  # bounds memory: chunks read ahead of the writer


def chunk_documents(documents: Iterable[Document]) -> Iterator[list[Document]]:
    """Group documents into chunks of about CHUNK_CHARS characters (at most CHUNK_DOCUMENTS documents)."""
    chunk, chars = [], 0
    for document in documents:
        chunk.append(document)
        chars += len(document) if isinstance(document, str) else len(document[0]) + len(document[1])
        if chars >= CHUNK_CHARS or len(chunk) >= CHUNK_DOCUMENTS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


# ----------------------------------------------------------------------------- encoding


@dataclass
class EncodedChunk:
    tokens: np.ndarray  # every document's ids followed by EOS, concatenated
    lengths: np.ndarray  # tokens per document, EOS included
    loss_mask: np.ndarray | None  # uint8 per token, 0 on prompt tokens; None without --prompt-field


class ChunkEncoder:
    """Encodes a chunk of documents with ``Tokenizer.encode_batch``, appending EOS to each document."""

    def __init__(self, tokenizer: Tokenizer, dtype: str):
        tokenizer.encode_special_tokens = True  # "<|endoftext|>" written inside a document is plain text
        self.tokenizer, self.eos, self.dtype = tokenizer, eos_id(tokenizer), DTYPES[dtype]

    def __call__(self, documents: list[Document]) -> EncodedChunk:
        if isinstance(documents[0], str):
            document_ids = [ids + [self.eos] for ids in self._encode(documents)]
            loss_mask = None
        else:
            ids = self._encode([text for pair in documents for text in pair])  # prompt, completion, ...
            prompts, completions = ids[0::2], ids[1::2]
            document_ids = [p + c + [self.eos] for p, c in zip(prompts, completions, strict=True)]
            segments = [n for p, c in zip(prompts, completions, strict=True) for n in (len(p), len(c) + 1)]
            loss_mask = np.repeat(np.tile(np.array([0, 1], np.uint8), len(documents)), segments)
        lengths = np.array([len(ids) for ids in document_ids], dtype=np.int64)
        tokens = np.fromiter(itertools.chain.from_iterable(document_ids), self.dtype, int(lengths.sum()))
        return EncodedChunk(tokens, lengths, loss_mask)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(texts, add_special_tokens=False)]


_worker_encoder: ChunkEncoder | None = None


def _start_worker(tokenizer_json: str, dtype: str) -> None:
    global _worker_encoder
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the processes are the parallelism: one thread each
    _worker_encoder = ChunkEncoder(Tokenizer.from_str(tokenizer_json), dtype)


def _encode_in_worker(documents: list[Document]) -> EncodedChunk:
    return _worker_encoder(documents)


def encode_in_order(
    chunks: Iterable[list[Document]], tokenizer: Tokenizer, dtype: str, workers: int
) -> Iterator[tuple[list[Document], EncodedChunk]]:
    """Encode chunks in input order, a bounded number in flight (so memory stays flat).

    One worker encodes in this process, on two threads: the tokenizers library already spreads each
    ``encode_batch`` over all cores, and a second chunk in flight keeps them busy while the first one's
    largest documents finish and while this thread writes. More workers are processes, one thread each.
    """
    if workers == 1:
        executor, encode = ThreadPoolExecutor(2), ChunkEncoder(tokenizer, dtype)
    else:
        context = multiprocessing.get_context("spawn")  # never fork a process that holds tokenizer threads
        initargs = (tokenizer.to_str(), dtype)
        executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=initargs)
        encode = _encode_in_worker
    in_flight = CHUNKS_IN_FLIGHT_PER_WORKER * max(workers, 2)
    pending = deque()
    try:
        for chunk in chunks:
            pending.append((chunk, executor.submit(encode, chunk)))
            if len(pending) >= in_flight:
                done, future = pending.popleft()
                yield done, future.result()
        for done, future in pending:
            yield done, future.result()
    finally:
        executor.shutdown(cancel_futures=True)


# ----------------------------------------------------------------------------- writing shards


class ShardWriter:
    """Appends encoded documents to the open shard and closes it at the first document end at or past
    ``shard_tokens``: the shard is renamed from its .tmp name, then recorded in build_state.jsonl."""

    def __init__(self, out: Path, state: dict, loss_mask: bool, digest: "hashlib._Hash"):
        self.out, self.state, self.loss_mask, self.digest = out, state, loss_mask, digest
        self.shard_tokens = state["config"]["shard_tokens"]
        self.documents_done = state["shards"][-1]["documents_end"] if state["shards"] else 0
        self._files: list = []  # the open shard's token file (and mask file), or [] when none is open
        self._hashes: list = []
        self._tokens = self._documents = 0

    def write(self, documents: list[Document], chunk: EncodedChunk) -> None:
        ends = np.cumsum(chunk.lengths)
        first = 0
        while first < len(documents):
            start = int(ends[first - 1]) if first else 0
            # the first document whose end brings the open shard to shard_tokens
            last = int(np.searchsorted(ends, start + self.shard_tokens - self._tokens, side="left"))
            stop = min(last + 1, len(documents))
            self._append(documents[first:stop], chunk, start, int(ends[stop - 1]))
            if last < len(documents):
                self._close_shard()
            first = stop

    def finish(self) -> list[dict]:
        if self._files:
            self._close_shard()
        return self.state["shards"]

    def _append(self, documents: list[Document], chunk: EncodedChunk, start: int, stop: int) -> None:
        if not self._files:
            self._open_shard()
        arrays = [chunk.tokens[start:stop]] + ([chunk.loss_mask[start:stop]] if self.loss_mask else [])
        for file, digest, array in zip(self._files, self._hashes, arrays, strict=True):
            file.write(array)
            digest.update(array)
        for document in documents:
            update_document_hash(self.digest, document)
        self._tokens += stop - start
        self._documents += len(documents)
        self.documents_done += len(documents)

    def _names(self) -> list[str]:
        index = len(self.state["shards"])
        return [shard_file_name(index)] + ([mask_file_name(index)] if self.loss_mask else [])

    def _open_shard(self) -> None:
        self._files = [open(self.out / f"{name}.tmp", "wb") for name in self._names()]
        self._hashes = [hashlib.sha256() for _ in self._files]

    def _close_shard(self) -> None:
        names = self._names()
        for file, name in zip(self._files, names, strict=True):
            file.flush()
            os.fsync(file.fileno())
            file.close()
            os.replace(self.out / f"{name}.tmp", self.out / name)
        hashes = [digest.hexdigest() for digest in self._hashes]
        self.state["shards"].append(
            {
                "file": names[0],
                "num_tokens": self._tokens,
                "num_documents": self._documents,
                "sha256": hashes[0],
                "mask_file": names[1] if self.loss_mask else None,
                "mask_sha256": hashes[1] if self.loss_mask else None,
                "documents_end": self.documents_done,  # resume point: documents read so far ...
                "text_sha256": self.digest.hexdigest(),  # ... and the hash of their text
            }
        )
        with open(self.out / STATE_NAME, "a", encoding="utf-8") as state_file:
            state_file.write(json.dumps(self.state["shards"][-1]) + "\n")
        self._files, self._hashes = [], []
        self._tokens = self._documents = 0


def write_json_atomically(path: Path, data: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def build_files(state: dict) -> set[str]:
    """The names a build with this state may have written: its recorded shards, the shard in progress (under
    its final or its .tmp name), the state file and the manifest."""
    names = {MANIFEST_NAME, f"{MANIFEST_NAME}.tmp", STATE_NAME}
    names |= {shard[key] for shard in state["shards"] for key in ("file", "mask_file") if shard[key]}
    index = len(state["shards"])
    names |= {name + suffix for name in (shard_file_name(index), mask_file_name(index)) for suffix in ("", ".tmp")}
    return names


def remove_build_files(out: Path, state: dict) -> None:
    """Delete this build's files, nothing else."""
    for name in build_files(state):
        (out / name).unlink(missing_ok=True)


def _prepare_output(out: Path, config: dict) -> dict:
    """The build state to continue from: the interrupted build's when it can resume, else a clean one."""
    out.mkdir(parents=True, exist_ok=True)
    state = _read_state(out)
    ours = build_files(state) if state else set()
    if foreign := sorted(path.name for path in out.glob("shard_*") if path.name not in ours):
        raise ConfigError(
            f"--out {out} holds shard files this build did not write ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}); choose another folder or move them away"
        )
    if state is None:
        return _start_clean(out, config)
    if state["config"] != config or not _shards_intact(out, state["shards"]):
        print(f"{out}: the interrupted build's settings or shard files differ; starting clean", file=sys.stderr)
        remove_build_files(out, state)
        return _start_clean(out, config)
    return state


def _start_clean(out: Path, config: dict) -> dict:
    (out / STATE_NAME).write_text(
        json.dumps({"format": f"{FORMAT} build state", "config": config}) + "\n", encoding="utf-8"
    )
    return {"config": config, "shards": []}


def _manifest_files(path: Path) -> set[str]:
    shards = json.loads(path.read_text(encoding="utf-8"))["shards"]
    return {shard[key] for shard in shards for key in ("file", "mask_file") if shard[key]}


def _swap_in(staging: Path, out: Path) -> None:
    """Replace the complete build in `out` by the complete build in `staging`, resumably: the old build's file
    names are saved first, so a swap cut short is finished by the next run."""
    replacing = staging / REPLACING_NAME
    if not replacing.exists():
        old_files = _manifest_files(out / MANIFEST_NAME) if (out / MANIFEST_NAME).exists() else set()
        write_json_atomically(replacing, {"files": sorted(old_files)})
    new_files = _manifest_files(staging / MANIFEST_NAME)
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # from here on `out` is incomplete until the new manifest lands
    for name in json.loads(replacing.read_text())["files"]:
        if name not in new_files:
            (out / name).unlink(missing_ok=True)
    for name in new_files:
        if (staging / name).exists():
            os.replace(staging / name, out / name)
    os.replace(staging / MANIFEST_NAME, out / MANIFEST_NAME)
    replacing.unlink()
    staging.rmdir()


def _read_state(out: Path) -> dict | None:
    try:
        lines = (out / STATE_NAME).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            break  # a line cut short by the interruption: its shard is redone
    if not records or "config" not in records[0]:
        return None
    return {"config": records[0]["config"], "shards": records[1:]}


def _shards_intact(out: Path, shards: list[dict]) -> bool:
    return all(
        (out / shard[name]).is_file() and file_sha256(out / shard[name]) == shard[digest]
        for shard in shards
        for name, digest in (("file", "sha256"), ("mask_file", "mask_sha256"))
        if shard[name]
    )


def _skip_built_documents(documents: Iterator[Document], last_shard: dict, digest: "hashlib._Hash") -> bool:
    """Read past the documents the kept shards hold; True if their text is what was built before."""
    for document in itertools.islice(documents, last_shard["documents_end"]):
        update_document_hash(digest, document)
    return digest.hexdigest() == last_shard["text_sha256"]


def _choose_dtype(vocab_size: int, requested: str) -> str:
    try:
        fitting = dtype_for_vocab(vocab_size)
    except ShardFormatError as error:
        raise ConfigError(f"--tokenizer: {error}") from None
    if requested == "auto":
        return fitting
    if vocab_size > np.iinfo(DTYPES[requested]).max + 1:
        raise ConfigError(
            f"--dtype {requested} cannot hold the ids of a {vocab_size}-token vocabulary; use {fitting} or auto"
        )
    return requested


def build_shards(
    tokenizer_source: str | Path,
    out: str | Path,
    inputs: Iterable[str | Path] = (),
    *,
    field: str = "text",
    prompt_field: str | None = None,
    hub: HubDataset | None = None,
    workers: int = 1,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    dtype: str = "auto",
    overwrite: bool = False,
) -> dict:
    """Build (or finish an interrupted build of) a shard folder; returns its manifest."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if shard_tokens < 1:
        raise ConfigError(f"--shard-tokens must be at least 1, got {shard_tokens}")
    tokenizer = load_tokenizer(tokenizer_source)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype = _choose_dtype(vocab_size, dtype)
    files = list_input_files(inputs)
    if not files and hub is None:
        raise ConfigError("no inputs: name JSONL, Parquet or text files or folders, or --hf-dataset")
    out = Path(out)
    staging = out / STAGING_NAME
    if (staging / MANIFEST_NAME).exists():  # a replacement was complete but not yet swapped in
        _swap_in(staging, out)
    if (out / MANIFEST_NAME).exists() and not overwrite:
        raise ConfigError(
            f"{out} already holds a complete shard build ({MANIFEST_NAME}); pass --overwrite to replace it"
        )
    config = {
        "tokenizer_sha256": tokenizer_hash(tokenizer),
        "inputs": [str(path.resolve()) for path in files],
        "hub": None if hub is None else [hub.name, hub.config, hub.split],
        "field": field,
        "prompt_field": prompt_field,
        "shard_tokens": shard_tokens,
        "dtype": dtype,
    }
    stream = DocumentStream(files, hub, field, prompt_field)
    if not (out / MANIFEST_NAME).exists():
        return _build(tokenizer, tokenizer_source, out, config, stream, workers)
    manifest = _build(tokenizer, tokenizer_source, staging, config, stream, workers)  # --overwrite: beside the old
    _swap_in(staging, out)
    return manifest


def _build(
    tokenizer: Tokenizer, tokenizer_source: str | Path, out: Path, config: dict, stream: DocumentStream, workers: int
) -> dict:
    """Build, or finish, the shards of `stream` in `out`; returns the manifest written there."""
    dtype, prompt_field = config["dtype"], config["prompt_field"]
    state = _prepare_output(out, config)
    documents, digest = iter(stream), hashlib.sha256()
    if state["shards"]:
        if _skip_built_documents(documents, state["shards"][-1], digest):
            done = state["shards"][-1]["documents_end"]
            print(f"{out}: resuming after {len(state['shards'])} complete shards ({done} documents)", file=sys.stderr)
        else:
            print(f"{out}: inputs changed since the interrupted build; starting clean", file=sys.stderr)
            remove_build_files(out, state)
            state = _start_clean(out, config)
            documents, digest = iter(stream), hashlib.sha256()

    writer = ShardWriter(out, state, prompt_field is not None, digest)
    resumed_tokens = sum(shard["num_tokens"] for shard in state["shards"])
    with tqdm(desc=f"tokenizing into {out}", unit="tok", unit_scale=True, initial=resumed_tokens) as progress:
        for chunk, encoded in encode_in_order(chunk_documents(documents), tokenizer, dtype, workers):
            writer.write(chunk, encoded)
            progress.update(len(encoded.tokens))
            progress.set_postfix(documents=writer.documents_done, shards=len(state["shards"]))
    shards = writer.finish()
    if not shards:
        remove_build_files(out, state)
        raise ConfigError(f"the inputs hold no documents: {[source['path'] for source in stream.sources]}")

    manifest = {
        "format": FORMAT,
        "dtype": dtype,
        "eos_id": eos_id(tokenizer),
        "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
        "tokenizer": {"source": str(tokenizer_source), "sha256": config["tokenizer_sha256"]},
        "num_tokens": sum(shard["num_tokens"] for shard in shards),
        "num_documents": sum(shard["num_documents"] for shard in shards),
        "shard_tokens": config["shard_tokens"],
        "loss_mask": prompt_field is not None,
        "shards": [
            {key: shard[key] for key in shard if key not in ("documents_end", "text_sha256")} for shard in shards
        ],
        "sources": stream.sources,
    }
    manifest["sampled_sha256"] = sampled_sha256(out, manifest)
    write_json_atomically(out / MANIFEST_NAME, manifest)
    (out / STATE_NAME).unlink()
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", help="JSONL (.jsonl, .jsonl.gz), Parquet or text files, or folders")
    parser.add_argument("--tokenizer", required=True, help="tokenizer.json, a folder holding one, or a hub id")
    parser.add_argument("--out", required=True, type=Path, help="shard folder to write")
    parser.add_argument(
        "--field", default="text", help="record field holding the text (the completion with --prompt-field)"
    )
    parser.add_argument("--prompt-field", help="record field holding the prompt; writes a loss mask that excludes it")
    parser.add_argument("--hf-dataset", help="Hugging Face dataset to stream (needs the datasets package)")
    parser.add_argument("--hf-config", help="configuration of --hf-dataset")
    parser.add_argument("--hf-split", default="train", help="split of --hf-dataset")
    parser.add_argument("--workers", type=int, default=1, help="encoding processes (1: in this process)")
    parser.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, help="target tokens per shard")
    parser.add_argument("--dtype", choices=["auto", *DTYPES], default="auto", help="token dtype (auto: narrowest)")
    parser.add_argument("--overwrite", action="store_true", help="replace a complete build in --out")
    args = parser.parse_args(argv)
    hub = None if args.hf_dataset is None else HubDataset(args.hf_dataset, args.hf_config, args.hf_split)
    try:
        manifest = build_shards(
            args.tokenizer,
            args.out,
            args.inputs,
            field=args.field,
            prompt_field=args.prompt_field,
            hub=hub,
            workers=args.workers,
            shard_tokens=args.shard_tokens,
            dtype=args.dtype,
            overwrite=args.overwrite,
        )
    except ConfigError as error:  # TokenizerError is one
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"{args.out}: {manifest['num_tokens']:,} tokens, {manifest['num_documents']:,} documents, "
        f"{len(manifest['shards'])} shards of {manifest['dtype']}"
        + (", with loss masks" if manifest["loss_mask"] else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
