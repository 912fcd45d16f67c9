"""Tokenize a corpus into packed token shards: paper §2.3's stream of documents joined by <|endoftext|>.

    python -m data_prep.build_shards --tokenizer PATH_OR_HUB_ID --out DIR [INPUT ...]
        [--field text] [--prompt-field prompt] [--hf-dataset NAME [--hf-config C] [--hf-split train]]
        [--workers N] [--shard-tokens N] [--dtype auto|uint16|uint32] [--overwrite]

The shard format is documented in ``phi1/shards.py``; each document is followed by one EOS.

Inputs, read in a fixed order whatever the worker count (sorted files, then records in file order, then
the hub dataset): JSONL (``.jsonl``, ``.jsonl.gz``; one JSON object per line, text in ``--field``),
Parquet (``.parquet``, read a batch at a time), any other file as one plain-text UTF-8 document
(folders are searched recursively for ``.jsonl``, ``.jsonl.gz``, ``.parquet``, ``.py``, ``.txt``,
``.md``), and a Hugging Face dataset streamed with ``--hf-dataset``.

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
build. A complete build is never replaced without ``--overwrite``. Files in the output folder other than this
build's are left alone.

Bad input (malformed JSON, a missing field, an empty corpus, a dtype too narrow for the tokenizer) ends with
a message naming the file and line and exit status 2.
"""

import argparse
import gzip
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

from phi1.shards import (
    DEFAULT_SHARD_TOKENS,
    DTYPES,
    FORMAT,
    MANIFEST_NAME,
    ShardFormatError,
    dtype_for_vocab,
    mask_file_name,
    shard_file_name,
)
from phi1.tokenizer import TokenizerError, eos_id, load_tokenizer, tokenizer_hash

RECORD_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
TEXT_SUFFIXES = (".py", ".txt", ".md")
STATE_NAME = "build_state.jsonl"  # the build settings, then one line per completed shard
CHUNK_CHARS = 1 << 20  # documents are sent to the encoder in chunks of about this many characters
CHUNK_DOCUMENTS = 4096  # ... or this many documents
CHUNKS_IN_FLIGHT_PER_WORKER = 2  # bounds memory: chunks read ahead of the writer

# A document is its text, or (prompt, completion) when building with a loss mask.
Document = str | tuple[str, str]


class InputError(ValueError):
    """A problem with the user's input or flags, reported without a traceback (exit status 2)."""


@dataclass(frozen=True)
class HubDataset:
    """A Hugging Face dataset to stream (``--hf-dataset/--hf-config/--hf-split``)."""

    name: str
    config: str | None = None
    split: str = "train"


# ----------------------------------------------------------------------------- reading documents


def list_input_files(inputs: Iterable[str | Path]) -> list[Path]:
    """The input files, folders expanded recursively (hidden entries and __pycache__ skipped), sorted."""
    files = set()
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = [
                file
                for file in path.rglob("*")
                if file.is_file()
                and file.name.endswith(RECORD_SUFFIXES + TEXT_SUFFIXES)
                and not any(part.startswith(".") or part == "__pycache__" for part in file.relative_to(path).parts)
            ]
            if not found:
                raise InputError(f"input folder {path} holds no {', '.join(RECORD_SUFFIXES + TEXT_SUFFIXES)} files")
            files.update(found)
        elif path.is_file():
            files.add(path)
        else:
            raise InputError(f"input {path} does not exist")
    return sorted(files, key=str)


def read_file_documents(path: Path, field: str = "text", prompt_field: str | None = None) -> Iterator[Document]:
    """The documents of one input file, in file order."""
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        yield from _jsonl_documents(path, field, prompt_field)
    elif path.name.endswith(".parquet"):
        yield from _parquet_documents(path, field, prompt_field)
    elif prompt_field is not None:
        raise InputError(
            f"{path}: a plain text file has no {prompt_field!r} field; --prompt-field needs JSONL or Parquet"
        )
    else:
        try:
            yield path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            raise InputError(f"{path}: not UTF-8 text ({error})") from None


def _jsonl_documents(path: Path, field: str, prompt_field: str | None) -> Iterator[Document]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as error:
                    raise InputError(f"{path}:{number}: malformed JSON ({error})") from None
                yield _record_document(record, field, prompt_field, f"{path}:{number}")
    except (OSError, EOFError) as error:
        raise InputError(f"{path}: cannot read it ({error})") from None


def _parquet_documents(path: Path, field: str, prompt_field: str | None) -> Iterator[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:
        raise InputError(f"{path}: not a readable Parquet file ({error})") from None
    flags = {field: "--field"} | ({} if prompt_field is None else {prompt_field: "--prompt-field"})
    for column, flag in flags.items():
        if column not in parquet.schema_arrow.names:
            raise InputError(f"{path}: no column {column!r} (columns: {parquet.schema_arrow.names}); set {flag}")
    row = 0
    for batch in parquet.iter_batches(batch_size=1024, columns=list(flags)):
        for record in batch.to_pylist():
            row += 1
            yield _record_document(record, field, prompt_field, f"{path}:row {row}")


def _hub_documents(dataset: HubDataset, field: str, prompt_field: str | None) -> Iterator[Document]:
    try:
        import datasets
    except ImportError:
        raise InputError("--hf-dataset needs the datasets package (pip install datasets)") from None
    try:
        records = datasets.load_dataset(dataset.name, dataset.config, split=dataset.split, streaming=True)
    except Exception as error:
        raise InputError(f"--hf-dataset {dataset.name}: cannot open it ({error})") from None
    for number, record in enumerate(records, 1):
        yield _record_document(record, field, prompt_field, f"--hf-dataset {dataset.name} record {number}")


def _record_document(record: object, field: str, prompt_field: str | None, where: str) -> Document:
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(record).__name__}")
    text = _text_field(record, field, "--field", where)
    if prompt_field is None:
        return text
    return _text_field(record, prompt_field, "--prompt-field", where), text


def _text_field(record: dict, field: str, flag: str, where: str) -> str:
    if field not in record:
        raise InputError(f"{where}: missing field {field!r} (fields: {sorted(record)}); set {flag}")
    value = record[field]
    if not isinstance(value, str):
        raise InputError(f"{where}: field {field!r} should be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InputError(f"{where}: field {field!r} is not valid Unicode ({error})") from None
    return value


def update_document_hash(digest: "hashlib._Hash", document: Document) -> None:
    """Add one document's text to a running sha256 (length-prefixed, so the split into documents counts)."""
    for text in (document,) if isinstance(document, str) else document:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


class DocumentStream:
    """All documents of a build in build order; after a full pass, ``sources`` describes each input."""

    def __init__(self, files: list[Path], hub: HubDataset | None, field: str, prompt_field: str | None):
        self.files, self.hub, self.field, self.prompt_field = files, hub, field, prompt_field
        self.sources: list[dict] = []

    def __iter__(self) -> Iterator[Document]:
        self.sources = []
        for path in self.files:
            count = 0
            for document in read_file_documents(path, self.field, self.prompt_field):
                count += 1
                yield document
            self.sources.append(
                {"path": str(path), "sha256": file_sha256(path), "sha256_of": "file", "documents": count}
            )
        if self.hub is not None:
            digest, count = hashlib.sha256(), 0
            for document in _hub_documents(self.hub, self.field, self.prompt_field):
                count += 1
                update_document_hash(digest, document)
                yield document
            self.sources.append(
                {
                    "path": f"hf:{self.hub.name}",
                    "config": self.hub.config,
                    "split": self.hub.split,
                    "sha256": digest.hexdigest(),
                    "sha256_of": "text",
                    "documents": count,
                }
            )


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


def remove_build_files(out: Path) -> None:
    """Delete this build's files (shards, masks, temporaries, state, manifest), nothing else."""
    names = [MANIFEST_NAME, STATE_NAME, f"{MANIFEST_NAME}.tmp"]
    for path in [*out.glob("shard_*"), *(out / name for name in names)]:
        path.unlink(missing_ok=True)


def _prepare_output(out: Path, config: dict, overwrite: bool) -> dict:
    """The build state to continue from: the interrupted build's when it can resume, else a clean one."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / MANIFEST_NAME).exists() and not overwrite:
        raise InputError(
            f"{out} already holds a complete shard build ({MANIFEST_NAME}); pass --overwrite to replace it"
        )
    state = None if overwrite else _read_state(out)
    if state is None:
        return _start_clean(out, config)
    if state["config"] != config or not _shards_intact(out, state["shards"]):
        print(f"{out}: the interrupted build's settings or shard files differ; starting clean", file=sys.stderr)
        return _start_clean(out, config)
    kept = {STATE_NAME} | {shard[key] for shard in state["shards"] for key in ("file", "mask_file") if shard[key]}
    for path in out.glob("shard_*"):
        if path.name not in kept:
            path.unlink()
    return state


def _start_clean(out: Path, config: dict) -> dict:
    remove_build_files(out)
    (out / STATE_NAME).write_text(
        json.dumps({"format": f"{FORMAT} build state", "config": config}) + "\n", encoding="utf-8"
    )
    return {"config": config, "shards": []}


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
        raise InputError(f"--tokenizer: {error}") from None
    if requested == "auto":
        return fitting
    if vocab_size > np.iinfo(DTYPES[requested]).max + 1:
        raise InputError(
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
        raise InputError(f"--workers must be at least 1, got {workers}")
    if shard_tokens < 1:
        raise InputError(f"--shard-tokens must be at least 1, got {shard_tokens}")
    tokenizer = load_tokenizer(tokenizer_source)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype = _choose_dtype(vocab_size, dtype)
    files = list_input_files(inputs)
    if not files and hub is None:
        raise InputError("no inputs: name JSONL, Parquet or text files or folders, or --hf-dataset")
    out = Path(out)
    config = {
        "tokenizer_sha256": tokenizer_hash(tokenizer),
        "inputs": [str(path.resolve()) for path in files],
        "hub": None if hub is None else [hub.name, hub.config, hub.split],
        "field": field,
        "prompt_field": prompt_field,
        "shard_tokens": shard_tokens,
        "dtype": dtype,
    }
    state = _prepare_output(out, config, overwrite)
    stream = DocumentStream(files, hub, field, prompt_field)
    documents, digest = iter(stream), hashlib.sha256()
    if state["shards"]:
        if _skip_built_documents(documents, state["shards"][-1], digest):
            done = state["shards"][-1]["documents_end"]
            print(f"{out}: resuming after {len(state['shards'])} complete shards ({done} documents)", file=sys.stderr)
        else:
            print(f"{out}: inputs changed since the interrupted build; starting clean", file=sys.stderr)
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
        remove_build_files(out)
        raise InputError(f"the inputs hold no documents: {[str(path) for path in files] or hub}")

    manifest = {
        "format": FORMAT,
        "dtype": dtype,
        "eos_id": eos_id(tokenizer),
        "vocab_size": vocab_size,
        "tokenizer": {"source": str(tokenizer_source), "sha256": config["tokenizer_sha256"]},
        "num_tokens": sum(shard["num_tokens"] for shard in shards),
        "num_documents": sum(shard["num_documents"] for shard in shards),
        "shard_tokens": shard_tokens,
        "loss_mask": prompt_field is not None,
        "shards": [
            {key: shard[key] for key in shard if key not in ("documents_end", "text_sha256")} for shard in shards
        ],
        "sources": stream.sources,
    }
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
    except (InputError, TokenizerError) as error:
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
