"""The documents of a corpus, read in a fixed order: what the shard builder and the tokenizer trainer read.

Inputs: JSONL (``.jsonl``, ``.jsonl.gz``; one JSON object per line, text in ``field``), Parquet (``.parquet``,
read a batch at a time), any other file as one plain-text UTF-8 document (folders are searched recursively
for ``.jsonl``, ``.jsonl.gz``, ``.parquet``, ``.py``, ``.txt``, ``.md``), and a Hugging Face dataset streamed
with ``datasets``. The order is fixed: sorted files, then records in file order, then the hub dataset.

A document is its text, or (prompt, completion) when a ``prompt_field`` is given (finetuning exercises).
Bad input (malformed JSON, a missing field, a file that is not UTF-8) raises ``ConfigError`` naming the file
and line.
"""

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from phi1.errors import ConfigError
from phi1.jsonl import read_jsonl

RECORD_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
TEXT_SUFFIXES = (".py", ".txt", ".md")

Document = str | tuple[str, str]


@dataclass(frozen=True)
class HubDataset:
    """A Hugging Face dataset to stream (``--hf-dataset/--hf-config/--hf-split``)."""

    name: str
    config: str | None = None
    split: str = "train"


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
                raise ConfigError(f"input folder {path} holds no {', '.join(RECORD_SUFFIXES + TEXT_SUFFIXES)} files")
            files.update(found)
        elif path.is_file():
            files.add(path)
        else:
            raise ConfigError(f"input {path} does not exist")
    return sorted(files, key=str)


def read_file_documents(path: Path, field: str = "text", prompt_field: str | None = None) -> Iterator[Document]:
    """The documents of one input file, in file order."""
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        yield from _jsonl_documents(path, field, prompt_field)
    elif path.name.endswith(".parquet"):
        yield from _parquet_documents(path, field, prompt_field)
    elif prompt_field is not None:
        raise ConfigError(
            f"{path}: a plain text file has no {prompt_field!r} field; --prompt-field needs JSONL or Parquet"
        )
    else:
        try:
            yield path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not UTF-8 text ({error})") from None


def _jsonl_documents(path: Path, field: str, prompt_field: str | None) -> Iterator[Document]:
    for number, record in read_jsonl(path):
        yield _record_document(record, field, prompt_field, f"{path}:{number}")


def _parquet_documents(path: Path, field: str, prompt_field: str | None) -> Iterator[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:
        raise ConfigError(f"{path}: not a readable Parquet file ({error})") from None
    flags = {field: "--field"} | ({} if prompt_field is None else {prompt_field: "--prompt-field"})
    for column, flag in flags.items():
        if column not in parquet.schema_arrow.names:
            raise ConfigError(f"{path}: no column {column!r} (columns: {parquet.schema_arrow.names}); set {flag}")
    row = 0
    for batch in parquet.iter_batches(batch_size=1024, columns=list(flags)):
        for record in batch.to_pylist():
            row += 1
            yield _record_document(record, field, prompt_field, f"{path}:row {row}")


def _hub_documents(dataset: HubDataset, field: str, prompt_field: str | None) -> Iterator[Document]:
    try:
        import datasets
    except ImportError:
        raise ConfigError("--hf-dataset needs the datasets package (pip install datasets)") from None
    try:
        records = datasets.load_dataset(dataset.name, dataset.config, split=dataset.split, streaming=True)
    except Exception as error:
        raise ConfigError(f"--hf-dataset {dataset.name}: cannot open it ({error})") from None
    for number, record in enumerate(records, 1):
        yield _record_document(record, field, prompt_field, f"--hf-dataset {dataset.name} record {number}")


def _record_document(record: object, field: str, prompt_field: str | None, where: str) -> Document:
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(record).__name__}")
    text = _text_field(record, field, "--field", where)
    if prompt_field is None:
        return text
    return _text_field(record, prompt_field, "--prompt-field", where), text


def _text_field(record: dict, field: str, flag: str, where: str) -> str:
    if field not in record:
        raise ConfigError(f"{where}: missing field {field!r} (fields: {sorted(record)}); set {flag}")
    value = record[field]
    if not isinstance(value, str):
        raise ConfigError(f"{where}: field {field!r} should be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ConfigError(f"{where}: field {field!r} is not valid Unicode ({error})") from None
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
