"""The raw code-language data of paper §2.1 as datatrove readers: The Stack (Python), StackOverflow, local files.

- The Stack: `bigcode/the-stack-dedup`, ``data_dir="data/python"``, streamed. It is gated: accept its terms on
  the Hub, then `huggingface-cli login` or set ``HF_TOKEN``. The token is read by `huggingface_hub` where the
  data is streamed and is never passed to, stored in or logged by this code (so it is not in datatrove's saved
  executor either).
- StackOverflow: a Hub dataset of posts, streamed; by default `suriyagunasekar/stackoverflow-python-with-meta-data`
  (Python questions with their answers in one `content` field, published by the paper's first author).
- Local: JSONL (``.jsonl``, ``.jsonl.gz``, text in ``--field``), Parquet, and ``.py`` files, each given as a file
  or a folder searched recursively.

Every document's id is `document_id`: a hash of its normalized content, so the same code gets the same id
wherever it comes from, and exact deduplication compares ids. Its origin is kept in the metadata: `source`,
and `repo`, `path`, `license` where the source gives them (other fields of a local record are kept as they are).
"""

import argparse
import hashlib
import unicodedata
from pathlib import Path

from datatrove.pipeline.readers import HuggingFaceDatasetReader, JsonlReader, ParquetReader
from datatrove.pipeline.readers.base import BaseDiskReader, BaseReader

from data_prep.stages import ExecutionOptions, claim_work_folder, execution_options
from phi1.errors import ConfigError

STACK_DATASET = "bigcode/the-stack-dedup"
STACK_DATA_DIR = "data/python"
STACKOVERFLOW_DATASET = "suriyagunasekar/stackoverflow-python-with-meta-data"
SUFFIXES = {"jsonl": (".jsonl", ".jsonl.gz"), "parquet": (".parquet",), "py": (".py",)}


def normalize(text: str) -> str:
    """The content that identifies a document: NFC Unicode, ``\\n`` line ends, no trailing spaces on a line,
    no blank lines at either end. Two files that differ only in these are the same document."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def document_id(text: str) -> str:
    """A stable id: 128 bits of BLAKE2b of the normalized content, as 32 hex digits."""
    return hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=16).hexdigest()


# ----------------------------------------------------------------------------- adapters (raw record -> document)


def local_path(reader: BaseDiskReader, path: str) -> str:
    """The full path of a file a reader reads (readers of listed files are rooted at "/")."""
    return "/" + reader.data_folder.resolve_paths(path).lstrip("/")


def stack_adapter(reader: BaseReader, data: dict, path: str, id_in_file: int | str) -> dict:
    text = data.get("content") or ""
    metadata = {
        "source": "the-stack",
        "repo": data.get("max_stars_repo_name"),
        "path": data.get("max_stars_repo_path"),
        "license": data.get("max_stars_repo_licenses"),
    }
    return {"text": text, "id": document_id(text), "metadata": metadata}


def stackoverflow_adapter(reader: BaseReader, data: dict, path: str, id_in_file: int | str) -> dict:
    text = data.get(reader.text_key) or ""
    metadata = {
        "source": "stackoverflow",
        "post": data.get("name"),
        "title": data.get("title"),
        "tags": data.get("tags"),
    }
    return {"text": text, "id": document_id(text), "metadata": metadata}


def record_adapter(reader: BaseReader, data: dict, path: str, id_in_file: int | str) -> dict:
    """A local JSONL/Parquet record: its text field becomes the text, every other field is kept in metadata
    (a record's own `id`, unless it is already the content id, as `source_id`), and `path` names the file and
    line or row."""
    data = dict(data)
    text = data.pop(reader.text_key, None)
    if not isinstance(text, str):
        text = ""
    metadata = data.pop("metadata", None)
    metadata = dict(metadata) if isinstance(metadata, dict) else {}
    own_id = data.pop("id", None)
    if own_id is not None and own_id != document_id(text):  # not one of ours: keep it
        metadata["source_id"] = own_id
    metadata.update(data)
    metadata.setdefault("source", "local")
    metadata.setdefault("path", f"{local_path(reader, path)}:{id_in_file}")
    return {"text": text, "id": document_id(text), "metadata": metadata}


def code_file_adapter(reader: BaseReader, data: dict, path: str, id_in_file: int | str) -> dict:
    text = data["text"]
    return {"text": text, "id": document_id(text), "metadata": {"source": "local", "path": data["path"]}}


class CodeFileReader(BaseDiskReader):
    """Each source file is one document; files that are not UTF-8 are counted (`not_utf8`) and skipped."""

    name = "📄 Code files"

    def __init__(self, data_folder: str, paths_file: str | None = None, glob_pattern: str | None = None, limit=-1):
        super().__init__(
            data_folder,
            paths_file,
            glob_pattern=glob_pattern,
            limit=limit,
            adapter=code_file_adapter,
            add_file_path=False,
        )

    def read_file(self, filepath: str):
        with self.data_folder.open(filepath, "rb") as file:
            raw = file.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.stat_update("not_utf8")
            return
        document = self.get_document_from_dict({"text": text, "path": local_path(self, filepath)}, filepath, 0)
        if document:
            yield document


# ----------------------------------------------------------------------------- readers


def stack_reader(limit: int = -1, dataset: str = STACK_DATASET, data_dir: str = STACK_DATA_DIR) -> BaseReader:
    """The Stack's Python files, streamed; needs the user's Hugging Face token (see the module docstring)."""
    return HuggingFaceDatasetReader(
        dataset,
        dataset_options={"data_dir": data_dir, "split": "train"},
        streaming=True,
        limit=limit,
        adapter=stack_adapter,
        text_key="content",
    )


def stackoverflow_reader(limit: int = -1, dataset: str = STACKOVERFLOW_DATASET, field: str = "content") -> BaseReader:
    return HuggingFaceDatasetReader(
        dataset,
        dataset_options={"split": "train"},
        streaming=True,
        limit=limit,
        adapter=stackoverflow_adapter,
        text_key=field,
    )


def input_files(inputs: list[str | Path]) -> dict[str, list[Path]]:
    """The files of each kind ("jsonl", "parquet", "py") among the inputs, folders searched recursively
    (hidden entries and __pycache__ skipped), as sorted absolute paths."""
    files: dict[str, set[Path]] = {kind: set() for kind in SUFFIXES}
    for name in inputs:
        path = Path(name).resolve()
        if path.is_dir():
            found = [
                file
                for file in path.rglob("*")
                if _kind(file) is not None
                and file.is_file()
                and not any(part.startswith(".") or part == "__pycache__" for part in file.relative_to(path).parts)
            ]
            if not found:
                raise ConfigError(f"input folder {name} holds no .jsonl, .jsonl.gz, .parquet or .py files")
            for file in found:
                files[_kind(file)].add(file)
        elif path.is_file():
            if _kind(path) is None:
                raise ConfigError(f"input {name}: expected a .jsonl, .jsonl.gz, .parquet or .py file, or a folder")
            files[_kind(path)].add(path)
        else:
            raise ConfigError(f"input {name} does not exist")
    return {kind: sorted(found) for kind, found in files.items() if found}


def _kind(path: Path) -> str | None:
    return next((kind for kind, suffixes in SUFFIXES.items() if path.name.endswith(suffixes)), None)


def write_paths_file(files: list[Path], path: Path) -> Path:
    """The list datatrove readers shard by (`paths_file`): one path per line, relative to the root folder, so
    task r reads files r, r + tasks, r + 2 tasks, ..."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{file.relative_to(file.anchor)}\n" for file in files))
    return path


def local_readers(inputs: list[str | Path], listing: Path, field: str = "text", limit: int = -1) -> list[BaseReader]:
    """Readers for local files and folders: JSONL and Parquet records (text in `field`) and ``.py`` files. The
    file lists they shard are written to ``listing/inputs-<kind>.txt``."""
    return _file_readers(input_files(inputs), listing, field, limit)


def _file_readers(files: dict[str, list[Path]], listing: Path, field: str, limit: int) -> list[BaseReader]:
    readers = []
    for kind, paths in files.items():
        paths_file = str(write_paths_file(paths, listing / f"inputs-{kind}.txt"))
        root = paths[0].anchor
        if kind == "py":
            readers.append(CodeFileReader(root, paths_file=paths_file, limit=limit))
            continue
        reader_class = JsonlReader if kind == "jsonl" else ParquetReader
        reader = reader_class(root, paths_file=paths_file, text_key=field, adapter=record_adapter, limit=limit)
        reader.add_file_path = False  # the adapter records the file and line as `path`
        readers.append(reader)
    return readers


# ----------------------------------------------------------------------------- flags


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sources")
    group.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="PATH",
        help="local .jsonl[.gz]/.parquet/.py file or folder (repeatable)",
    )
    group.add_argument("--field", default="text", help="text field of local JSONL/Parquet records")
    group.add_argument("--stack", action="store_true", help=f"stream {STACK_DATASET} ({STACK_DATA_DIR}); gated")
    group.add_argument("--stackoverflow", action="store_true", help="stream the StackOverflow dataset")
    group.add_argument("--stackoverflow-dataset", default=STACKOVERFLOW_DATASET)
    group.add_argument("--stackoverflow-field", default="content")
    group.add_argument("--limit", type=int, default=-1, help="at most this many documents per reader and task")


def start_source_job(args: argparse.Namespace, settings: dict) -> tuple[ExecutionOptions, list[BaseReader]]:
    """The execution options and source readers of a command line with the source and execution flags (above,
    data_prep.stages) and the work folder --out. The flags and inputs are checked first (ConfigError naming what is
    wrong, The Stack's token included), then --out is claimed for a job of `settings` (`claim_work_folder`; the
    folder's own path is not one of them: a folder moved, or named by another path, holds the same job) and the
    lists of local files are written in it."""
    options = execution_options(args)
    files = input_files(args.input)
    if args.stack:
        require_hub_token(STACK_DATASET)
    if not (files or args.stack or args.stackoverflow):
        raise ConfigError("no input: give --input PATH, --stack and/or --stackoverflow")
    claim_work_folder(args.out, {key: value for key, value in settings.items() if key != "out"})
    readers = _file_readers(files, args.out, args.field, args.limit)
    if args.stack:
        readers.append(stack_reader(args.limit))
    if args.stackoverflow:
        readers.append(stackoverflow_reader(args.limit, args.stackoverflow_dataset, args.stackoverflow_field))
    return options, readers


def require_hub_token(dataset: str) -> None:
    """Fail early, without showing it, if no Hugging Face token is configured for a gated dataset."""
    from huggingface_hub import get_token

    if get_token() is None:
        raise ConfigError(
            f"{dataset} is gated: accept its terms at https://huggingface.co/datasets/{dataset}, then run "
            "`huggingface-cli login` or set HF_TOKEN"
        )
