"""Append-only JSON-lines files that survive a kill at any moment: the bookkeeping of the synthetic-data runs
(paper §2.2) and of the LLM grader.

Each record is written as one line and flushed the moment it is appended, so a SIGKILL loses at most the line
being written. Such a torn last line (no trailing newline) is skipped on read and cut off when the file is opened
for appending again, so the next record starts on a line of its own. A folder of journals is held by one process
at a time (`hold_folder`): two runs appending to the same files would interleave their lines.
"""

import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


class JournalError(ValueError):
    """A journal line that is not a JSON object, other than a torn last line; the message names file and line."""


def read_journal(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(byte offset, record) for each complete line of `path`; nothing if the file does not exist."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as file:
        offset = 0
        for number, line in enumerate(file, 1):
            start, offset = offset, offset + len(line)
            if not line.endswith(b"\n"):
                return  # torn by a kill mid-write
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                raise JournalError(f"{path}:{number}: not JSON ({error})") from None
            if not isinstance(record, dict):
                raise JournalError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            yield start, record


def read_at(path: str | Path, offset: int) -> dict:
    """The record on the line that starts at byte `offset` (an offset from `read_journal`)."""
    with open(path, "rb") as file:
        file.seek(offset)
        return json.loads(file.readline())


class Journal:
    """An append-only JSONL file; a torn last line left by a kill is cut off on opening."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.file: IO[bytes] = open(self.path, "ab+")
        self.file.seek(0, os.SEEK_END)
        size = self.file.tell()
        if size:
            self.file.seek(max(0, size - (1 << 20)))
            tail = self.file.read()
            if not tail.endswith(b"\n"):
                newline = tail.rfind(b"\n")
                if newline < 0 and size > len(tail):
                    raise JournalError(f"{self.path}: last line is over 1 MiB and has no end; remove it by hand")
                self.file.truncate(size - len(tail) + newline + 1)
        self.file.seek(0, os.SEEK_END)

    def append(self, record: dict) -> int:
        """Write `record` as one line and flush it; returns the line's byte offset."""
        offset = self.file.tell()
        self.file.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
        self.file.flush()
        return offset

    def close(self) -> None:
        self.file.close()


def hold_folder(folder: Path) -> IO:
    """Create `folder` if needed and take its lock for this process (released when the process ends, a kill
    included); raises JournalError if another process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = open(folder / ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise JournalError(f"{folder} is being written by another run; wait for it or use another folder") from None
    return lock
