"""JSON lines, the project's one record format: corpora, samples, results, LLM journals.

`read_jsonl` is the one reader (plain or gzip, errors that name file and line). Files that a run appends to
while it may be killed (sample files, LLM request journals) are written by `JsonlAppender`: each record is one
line, flushed as it is written, so a kill leaves at most a torn last line (no newline). Readers of such files pass
`torn_tail="skip"`; `JsonlAppender` cuts a torn tail off before appending, so the next record starts on a line of
its own.
"""

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

from phi1.errors import ConfigError

TAIL_BYTES = 1 << 20  # how far back a torn tail is looked for


class JsonlError(ConfigError):
    """A JSONL file that cannot be used; the message names the file and line."""


def read_jsonl(path: str | Path, torn_tail: str = "error") -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL or JSONL.gz file.

    torn_tail: what a last line without a newline that is not valid JSON means: "error" (the file is
    corrupt) or "skip" (an append-only file cut by a kill: the record was never complete).
    """
    if torn_tail not in ("error", "skip"):
        raise ValueError(f"torn_tail={torn_tail!r}: choose 'error' or 'skip'")
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as error:
                    if torn_tail == "skip" and not line.endswith(b"\n"):
                        return
                    raise JsonlError(f"{path}:{number}: malformed JSON ({error})") from None
                if not isinstance(row, dict):
                    raise JsonlError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
                yield number, row
    except FileNotFoundError:
        raise JsonlError(f"{path}: no such file") from None
    except (OSError, EOFError) as error:  # a directory, a bad gzip stream
        raise JsonlError(f"{path}: cannot be read as JSONL ({error})") from None


def _is_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


class JsonlAppender:
    """Appends records to a JSONL file, one flushed line each. A last line without a newline is ended first if
    it holds a whole JSON object (a file written by hand), else cut off (a record torn by a kill)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.file = open(self.path, "ab+")
        size = self.file.seek(0, os.SEEK_END)
        if size:
            start = max(0, size - TAIL_BYTES)
            self.file.seek(start)
            tail = self.file.read()
            if not tail.endswith(b"\n"):
                newline = tail.rfind(b"\n")
                if newline < 0 and start > 0:
                    raise JsonlError(f"{self.path}: the last line is over 1 MiB and has no end; remove it by hand")
                if _is_object(tail[newline + 1 :]):
                    self.file.write(b"\n")
                else:
                    self.file.truncate(start + newline + 1)
        self.file.seek(0, os.SEEK_END)

    def append(self, record: dict) -> None:
        self.file.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
