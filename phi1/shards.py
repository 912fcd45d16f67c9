"""Packed token shards on disk: the format, and reading it back (paper §2.3, the training data stream).

phi-1 trains on "documents concatenated with <|endoftext|> between them", cut into 2048-token slices.
``data_prep/build_shards.py`` writes that stream once, tokenized, into a shard folder::

    manifest.json            written last: its presence marks a complete build
    shard_00000.bin          raw little-endian token ids (uint16, or uint32 for vocabularies > 65536)
    shard_00000.mask.bin     optional, one uint8 per token: 1 = the token counts in the loss,
    shard_00001.bin ...                                     0 = a prompt token (finetuning ablation)

The token stream is ``doc0 EOS doc1 EOS ... docN EOS``: every document, the last included, is followed by
one EOS (``<|endoftext|>``), so EOS ids mark exactly the document ends. Shards hold whole documents: a
shard is closed at the first document end at or past the build's ``shard_tokens``, so every shard ends
with EOS and the concatenation of the shards in manifest order is the whole stream.

manifest.json::

    {"format": "phi1-shards/1", "dtype": "uint16" | "uint32", "eos_id": int, "vocab_size": int,
     "tokenizer": {"source": str, "sha256": str}, "num_tokens": int, "num_documents": int,
     "shard_tokens": int, "loss_mask": bool,
     "shards": [{"file": "shard_00000.bin", "num_tokens": int, "num_documents": int, "sha256": str,
                 "mask_file": "shard_00000.mask.bin" | null, "mask_sha256": str | null}, ...],
     "sources": [{"path": str, "sha256": str, "sha256_of": "file" | "text", "documents": int, ...}, ...],
     "sampled_sha256": str}

``vocab_size`` is the tokenizer's (added tokens included), not the model's padded embedding size.
``sampled_sha256`` (`sampled_sha256`, optional in older builds) lets every training launch check cheaply that
the bytes are still those the build wrote.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from phi1.errors import ConfigError

FORMAT = "phi1-shards/1"
MANIFEST_NAME = "manifest.json"
DEFAULT_SHARD_TOKENS = 100_000_000  # 200 MB per uint16 shard; phi-1's ~7B-token corpus makes ~70
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}  # little-endian on every host

_MANIFEST_FIELDS = {
    "format": str,
    "dtype": str,
    "eos_id": int,
    "vocab_size": int,
    "tokenizer": dict,
    "num_tokens": int,
    "num_documents": int,
    "shards": list,
    "sources": list,
    "loss_mask": bool,
}
_SHARD_FIELDS = {"file": str, "num_tokens": int, "num_documents": int}


class ShardFormatError(ConfigError):
    """A shard folder that is incomplete, changed, or does not follow the phi1-shards format."""


def shard_file_name(index: int) -> str:
    return f"shard_{index:05d}.bin"


def mask_file_name(index: int) -> str:
    return f"shard_{index:05d}.mask.bin"


def dtype_for_vocab(vocab_size: int) -> str:
    """The narrowest token dtype that holds every id of a vocabulary of this size."""
    for name, dtype in DTYPES.items():
        if vocab_size <= np.iinfo(dtype).max + 1:
            return name
    raise ShardFormatError(f"vocabulary of {vocab_size} tokens does not fit uint32 token ids")


def read_manifest(folder: str | Path) -> dict:
    """Read and check a shard folder's manifest.json and that its shard files are all there, full size."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise ShardFormatError(f"shard folder {folder} does not exist")
    if not path.is_file():
        raise ShardFormatError(
            f"{folder} has no {MANIFEST_NAME}, so it is not a complete phi1 shard build "
            "(an interrupted build leaves none: rerun data_prep.build_shards to finish it)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ShardFormatError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(manifest, dict):
        raise ShardFormatError(f"{path} should hold a JSON object")
    _check_fields(manifest, _MANIFEST_FIELDS, str(path))
    if manifest["format"] != FORMAT:
        raise ShardFormatError(f"{path}: format is {manifest['format']!r}, expected {FORMAT!r}")
    if manifest["dtype"] not in DTYPES:
        raise ShardFormatError(f"{path}: dtype is {manifest['dtype']!r}, expected one of {sorted(DTYPES)}")
    if manifest["vocab_size"] > np.iinfo(DTYPES[manifest["dtype"]]).max + 1:
        raise ShardFormatError(f"{path}: vocab_size {manifest['vocab_size']} does not fit {manifest['dtype']}")
    if not 0 <= manifest["eos_id"] < manifest["vocab_size"]:
        raise ShardFormatError(f"{path}: eos_id {manifest['eos_id']} is outside the vocabulary")
    if not manifest["shards"]:
        raise ShardFormatError(f"{path}: shards is empty")
    itemsize = DTYPES[manifest["dtype"]].itemsize
    for index, shard in enumerate(manifest["shards"]):
        where = f"{path}: shards[{index}]"
        if not isinstance(shard, dict):
            raise ShardFormatError(f"{where} should be a JSON object")
        _check_fields(shard, _SHARD_FIELDS, where)
        if shard["num_tokens"] == 0:
            raise ShardFormatError(f"{where}: num_tokens is 0; every shard holds at least one document")
        _check_file_size(folder / shard["file"], shard["num_tokens"] * itemsize, where)
        mask_file = shard.get("mask_file")
        if manifest["loss_mask"] != isinstance(mask_file, str):
            raise ShardFormatError(f"{where}: mask_file is {mask_file!r} but loss_mask is {manifest['loss_mask']}")
        if mask_file is not None:
            _check_file_size(folder / mask_file, shard["num_tokens"], where)
    for total in ("num_tokens", "num_documents"):
        if manifest[total] != sum(shard[total] for shard in manifest["shards"]):
            raise ShardFormatError(f"{path}: {total} is not the sum of the shards' {total}")
    return manifest


def open_shards(folder: str | Path) -> list[np.memmap]:
    """Memory-map every token shard of a complete build, in stream order (read-only)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    dtype = DTYPES[manifest["dtype"]]
    shards = [np.memmap(folder / shard["file"], dtype=dtype, mode="r") for shard in manifest["shards"]]
    for shard, tokens in zip(manifest["shards"], shards, strict=True):
        if tokens[-1] != manifest["eos_id"]:
            raise ShardFormatError(f"{folder / shard['file']} does not end with eos_id {manifest['eos_id']}")
    return shards


def open_loss_masks(folder: str | Path) -> list[np.memmap]:
    """Memory-map the uint8 loss masks (1 = in the loss) aligned with ``open_shards``; needs a masked build."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if not manifest["loss_mask"]:
        raise ShardFormatError(f"{folder} was built without --prompt-field, so it has no loss masks")
    return [np.memmap(folder / shard["mask_file"], dtype=np.uint8, mode="r") for shard in manifest["shards"]]


def _check_fields(record: dict, fields: dict[str, type], where: str) -> None:
    for name, kind in fields.items():
        if name not in record:
            raise ShardFormatError(f"{where}: missing field {name!r}")
        value = record[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ShardFormatError(f"{where}: field {name!r} should be {kind.__name__}, got {value!r}")
        if kind is int and value < 0:
            raise ShardFormatError(f"{where}: field {name!r} should not be negative, got {value}")


def _check_file_size(path: Path, expected: int, where: str) -> None:
    if not path.is_file():
        raise ShardFormatError(f"{where}: file {path} is missing")
    if path.stat().st_size != expected:
        raise ShardFormatError(f"{where}: {path} holds {path.stat().st_size} bytes, expected {expected}")


def manifest_hash(manifest: dict) -> str:
    """The identity of a build's token stream: a sha256 over its tokenizer, dtype and every shard's name,
    length and sha256 (not over where its input documents were read from, so a moved folder keeps it)."""
    stream = {
        "dtype": manifest["dtype"],
        "eos_id": manifest["eos_id"],
        "tokenizer": manifest["tokenizer"].get("sha256"),
        "shards": [
            [s["file"], s["num_tokens"], s.get("sha256"), s.get("mask_file"), s.get("mask_sha256")]
            for s in manifest["shards"]
        ],
    }
    return hashlib.sha256(json.dumps(stream, sort_keys=True).encode()).hexdigest()


SAMPLED_PAGES, PAGE_BYTES = 16, 4096


def sampled_sha256(folder: str | Path, manifest: dict) -> str:
    """A cheap checksum of a build's bytes as they are now: sha256 over every file's size and 16 pages of
    4 KiB at fixed offsets (first and last included). Reads ~64 KiB per file, so it can run at every
    setup; a change in place between two runs shows up unless it misses every sampled page."""
    digest = hashlib.sha256()
    for shard in manifest["shards"]:
        for name in (shard["file"], shard.get("mask_file")):
            if name is None:
                continue
            path = Path(folder) / name
            size = path.stat().st_size
            digest.update(f"{name}:{size}".encode())
            with open(path, "rb") as f:
                for offset in np.linspace(0, max(size - PAGE_BYTES, 0), SAMPLED_PAGES, dtype=np.int64):
                    f.seek(int(offset))
                    digest.update(f.read(PAGE_BYTES))
    return digest.hexdigest()


def verify_sha256(folder: str | Path, manifest: dict) -> None:
    """Check every shard (and mask) file against the sha256 its manifest records; reads all the data."""
    folder = Path(folder)
    files = [
        (s[key], s.get(digest))
        for s in manifest["shards"]
        for key, digest in (("file", "sha256"), ("mask_file", "mask_sha256"))
        if s.get(key)
    ]
    total = sum((folder / name).stat().st_size for name, _ in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"sha256 {folder}") as progress:
        for name, expected in files:
            if expected is None:
                raise ShardFormatError(f"{folder / MANIFEST_NAME}: {name} has no sha256 to check against")
            digest = hashlib.sha256()
            with open(folder / name, "rb") as f:
                while chunk := f.read(1 << 24):
                    digest.update(chunk)
                    progress.update(len(chunk))
            if digest.hexdigest() != expected:
                raise ShardFormatError(
                    f"{folder / name}: sha256 {digest.hexdigest()[:16]}... differs from the manifest's "
                    f"{expected[:16]}...; the file changed after the build: rebuild the folder"
                )
