"""Document embeddings for the quality classifier of paper §2.1 ("a random forest classifier ... using output
embeddings from a pretrained codegen model"), computed once and cached by document id.

Embedders, named by an `EmbedderSpec` (plain data, so it pickles into datatrove's SLURM jobs and is saved with
a classifier):
- ``hf``: the mean over real tokens of the last hidden state of any Hugging Face causal LM, a hub id or a
  folder. The paper used a CodeGen model; ``Salesforce/codegen-350M-mono`` is the default.
- ``phi1``: the same for a checkpoint of this project (`phi1.checkpoint.load_model`, tokenizer via
  `phi1.tokenizer.load_tokenizer`): the final LayerNorm's output, mean-pooled.
- ``hashed``: offline and fast, for tests and CPU-only runs: counts of code-word 1- and 2-grams hashed into
  `dim` buckets (scikit-learn's `HashingVectorizer`, a fixed MurmurHash, so no fitting), log(1 + count),
  L2-normalized. No IDF: it would scale each feature by a constant, which changes nothing a random forest
  splits on beyond the row normalization, and it would need a fitted vocabulary.

Documents longer than `max_length` tokens are embedded from their first `max_length` tokens (default: the
model's context). An embedder's `identity` is everything that decides its vectors (model, weights digest or hub
revision, tokenizer, length, dtype); a classifier keeps it and refuses another (`data_prep.classifier`).

`EmbeddingCache` keeps vectors under ``<cache>/<fingerprint of identity>/<part>-<n>.npz`` (ids and float32
vectors, each file written whole under a temporary name, then renamed), so a restarted task or a retrained
classifier embeds nothing twice.
"""

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from phi1.errors import ConfigError

EMBEDDERS = ("hf", "phi1", "hashed")
DEFAULT_HF_MODEL = "Salesforce/codegen-350M-mono"
FLUSH_EVERY = 4096  # vectors kept in memory before a cache file is written


@dataclass(frozen=True)
class EmbedderSpec:
    """Which embedder, and how to run it. `device` and `batch_size` change speed, not vectors."""

    kind: str = "hashed"
    model: str | None = None  # hf: hub id or folder (default DEFAULT_HF_MODEL); phi1: checkpoint path or hub id
    tokenizer: str | None = None  # phi1: tokenizer.json, folder or hub id (hf: the model's own)
    max_length: int | None = None  # tokens embedded per document (default: the model's context)
    dtype: str = "float32"  # hf/phi1 weights and activations: float32, bfloat16 or float16
    dim: int = 1024  # hashed: dimensions
    device: str = "auto"  # auto: cuda if available
    batch_size: int = 16

    def __post_init__(self):
        if self.kind not in EMBEDDERS:
            raise ConfigError(f"embedder must be one of {', '.join(EMBEDDERS)}, got {self.kind!r}")
        if self.kind == "phi1" and not (self.model and self.tokenizer):
            raise ConfigError("the phi1 embedder needs --embedder-model CHECKPOINT and --embedder-tokenizer TOKENIZER")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"embedder dtype must be float32, bfloat16 or float16, got {self.dtype!r}")

    def build(self) -> "Embedder":
        if self.kind == "hashed":
            return HashedNgramEmbedder(self.dim)
        if self.kind == "hf":
            return CausalLMEmbedder(self)
        return Phi1Embedder(self)

    def to_dict(self) -> dict:
        return asdict(self)


class Embedder:
    """`embed(texts)` -> (N, dim) float32; `identity` decides the vectors, `fingerprint` names them."""

    identity: dict
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:16]


class HashedNgramEmbedder(Embedder):
    def __init__(self, dim: int = 1024):
        from sklearn.feature_extraction.text import HashingVectorizer

        from data_prep.code_words import code_words

        self.dim = dim
        self.identity = {"kind": "hashed", "dim": dim, "ngrams": [1, 2], "words": "code_words", "tf": "log1p-l2"}
        self.vectorizer = HashingVectorizer(
            n_features=dim,
            tokenizer=code_words,
            token_pattern=None,
            lowercase=False,
            ngram_range=(1, 2),
            alternate_sign=False,
            norm=None,
            dtype=np.float32,
        )

    def embed(self, texts: list[str]) -> np.ndarray:
        from sklearn.preprocessing import normalize

        counts = self.vectorizer.transform(texts)  # (N, dim) sparse
        counts.data = np.log1p(counts.data)
        return normalize(counts, norm="l2").toarray().astype(np.float32)


class _TransformerEmbedder(Embedder):
    """Mean-pooled final hidden states; batches are sorted by length so little is spent on padding."""

    def __init__(self, spec: EmbedderSpec):
        import torch

        self.spec = spec
        if spec.device == "auto":
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            self.device = torch.device(spec.device)
        self.dtype = getattr(torch, spec.dtype)

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def hidden_states(self, ids, mask):  # (B, T) -> (B, T, C)
        raise NotImplementedError

    def embed(self, texts: list[str]) -> np.ndarray:
        import torch

        ids = [row[: self.max_length] or [self.pad_id] for row in self.token_ids(texts)]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.empty((len(ids), self.dim), np.float32)
        for start in range(0, len(order), self.spec.batch_size):
            rows = order[start : start + self.spec.batch_size]
            width = max(len(ids[i]) for i in rows)
            batch = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.bool)
            for j, i in enumerate(rows):
                batch[j, : len(ids[i])] = torch.tensor(ids[i])
                mask[j, : len(ids[i])] = True
            batch, mask = batch.to(self.device), mask.to(self.device)
            with torch.inference_mode():
                hidden = self.hidden_states(batch, mask).float()  # (B, T, C), right padding: pads see nothing
                weights = mask.unsqueeze(-1).float()
                pooled = (hidden * weights).sum(1) / weights.sum(1)  # (B, C)
            out[rows] = pooled.cpu().numpy()
        return out


class CausalLMEmbedder(_TransformerEmbedder):
    def __init__(self, spec: EmbedderSpec):
        super().__init__(spec)
        from transformers import AutoModel, AutoTokenizer

        name = spec.model or DEFAULT_HF_MODEL
        self.tokenizer = AutoTokenizer.from_pretrained(name)
        self.model = AutoModel.from_pretrained(name, dtype=self.dtype).to(self.device).eval()  # no LM head
        config = self.model.config
        context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048
        self.max_length = spec.max_length or context
        self.dim = config.hidden_size
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0
        revision = getattr(config, "_commit_hash", None) if not Path(name).exists() else None
        self.identity = {
            "kind": "hf",
            "model": name,
            "weights": revision or weights_digest(Path(name)),
            "max_length": self.max_length,
            "dtype": spec.dtype,
            "pooling": "mean of last hidden state",
        }

    def token_ids(self, texts):
        return self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=self.max_length)["input_ids"]

    def hidden_states(self, ids, mask):
        return self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state


class Phi1Embedder(_TransformerEmbedder):
    def __init__(self, spec: EmbedderSpec):
        super().__init__(spec)
        import torch

        from phi1.checkpoint import HUB_FILES, load_model
        from phi1.hub import resolve
        from phi1.tokenizer import load_tokenizer, tokenizer_hash

        self.tokenizer = load_tokenizer(spec.tokenizer)
        self.tokenizer.no_truncation()
        self.tokenizer.encode_special_tokens = True
        path = resolve(spec.model, "checkpoint", HUB_FILES)  # a hub id: the snapshot downloaded, weights and all
        model = load_model(path).to(self.device, self.dtype).eval()
        if self.tokenizer.get_vocab_size() > model.config.vocab_size:
            raise ConfigError(
                f"--embedder-tokenizer {spec.tokenizer} has {self.tokenizer.get_vocab_size()} tokens, more than the "
                f"vocab_size {model.config.vocab_size} of --embedder-model {spec.model}: not the model's tokenizer"
            )
        model.lm_head = torch.nn.Identity()  # forward() now returns the final LayerNorm's output, (B, T, C)
        self.model = model
        self.max_length = min(spec.max_length or model.config.block_size, model.config.block_size)
        self.dim = model.config.n_embd
        self.pad_id = 0
        self.identity = {
            "kind": "phi1",
            "model": spec.model,
            "weights": weights_digest(path),  # of the very files loaded, so a hub repo's update is another embedder
            "tokenizer": tokenizer_hash(self.tokenizer),
            "max_length": self.max_length,
            "dtype": spec.dtype,
            "pooling": "mean of final LayerNorm output",
        }

    def token_ids(self, texts):
        return [encoding.ids for encoding in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def hidden_states(self, ids, mask):
        return self.model(ids)


def weights_digest(path: Path) -> str:
    """sha256 of a weights file, or of a folder's weight files (names and contents), in sorted order."""
    files = (
        [path]
        if path.is_file()
        else sorted(file for file in path.iterdir() if file.suffix in (".safetensors", ".bin", ".ckpt", ".pt", ".pth"))
    )
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- cache


class EmbeddingCache:
    """Vectors by document id for one embedder, in ``root/<fingerprint>/<part>-<n>.npz``.

    A part is what one process writes (a task, the classifier's labels), so parallel tasks never share a file.
    `put` holds vectors in memory and writes a file every FLUSH_EVERY of them and on `flush`.
    """

    def __init__(self, root: str | Path, embedder: Embedder, part: str):
        self.folder = Path(root) / embedder.fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)
        identity_file = self.folder / "identity.json"
        if not identity_file.exists():
            _write_atomically(identity_file, lambda f: f.write(json.dumps(embedder.identity, indent=2).encode()))
        self.part, self.dim = part, embedder.dim
        self.vectors: dict[str, np.ndarray] = {}
        files = sorted(self.folder.glob(f"{part}-*.npz"))
        for file in files:
            with np.load(file) as data:
                self.vectors.update(zip(data["ids"].tolist(), data["vectors"], strict=True))
        self.next_file = len(files)
        self.pending: dict[str, np.ndarray] = {}

    def __contains__(self, document_id: str) -> bool:
        return document_id in self.vectors

    def __getitem__(self, document_id: str) -> np.ndarray:
        return self.vectors[document_id]

    def put(self, ids: list[str], vectors: np.ndarray) -> None:
        for document_id, vector in zip(ids, vectors, strict=True):
            self.vectors[document_id] = self.pending[document_id] = vector
        if len(self.pending) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        ids = np.array(list(self.pending))
        vectors = np.stack(list(self.pending.values())).astype(np.float32)
        path = self.folder / f"{self.part}-{self.next_file:05d}.npz"
        _write_atomically(path, lambda f: np.savez(f, ids=ids, vectors=vectors))
        self.next_file += 1
        self.pending = {}


def _write_atomically(path: Path, write) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as file:
        write(file)
    os.replace(temporary, path)


def embed_documents(
    embedder: Embedder,
    ids: list[str],
    texts: list[str],
    cache: EmbeddingCache | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """(N, dim) vectors of the documents, in order: from the cache when there, else embedded `batch_size`
    documents at a time and put in the cache (which writes them out every FLUSH_EVERY; `flush` it when done)."""
    out = np.empty((len(ids), embedder.dim), np.float32)
    missing = []
    for i, document_id in enumerate(ids):
        if cache is not None and document_id in cache:
            out[i] = cache[document_id]
        else:
            missing.append(i)
    with tqdm(total=len(missing), unit="doc", desc="embedding", disable=not progress or not missing) as bar:
        for start in range(0, len(missing), batch_size):
            rows = missing[start : start + batch_size]
            vectors = embedder.embed([texts[i] for i in rows])
            out[rows] = vectors
            if cache is not None:
                cache.put([ids[i] for i in rows], vectors)
            bar.update(len(rows))
    return out


EMBEDDER_RUNTIME_FLAGS = ("device", "embed_batch_size")  # change speed, not vectors (`job_settings`)


def add_embedder_arguments(parser) -> None:
    group = parser.add_argument_group("embedder")
    group.add_argument(
        "--embedder",
        choices=EMBEDDERS,
        default="hashed",
        help=f"hf: a Hugging Face causal LM (default {DEFAULT_HF_MODEL}); phi1: a phi1 checkpoint; "
        "hashed: offline hashed n-grams",
    )
    group.add_argument("--embedder-model", help="hf: hub id or folder; phi1: checkpoint path or hub id")
    group.add_argument("--embedder-tokenizer", help="phi1: tokenizer.json, folder or hub id")
    group.add_argument("--embedder-max-length", type=int, help="tokens embedded per document (default: context)")
    group.add_argument("--embedder-dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    group.add_argument("--embedder-dim", type=int, default=1024, help="hashed: dimensions")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    group.add_argument("--embed-batch-size", type=int, default=16, help="documents per model forward pass")


def embedder_spec(args) -> EmbedderSpec:
    return EmbedderSpec(
        kind=args.embedder,
        model=args.embedder_model,
        tokenizer=args.embedder_tokenizer,
        max_length=args.embedder_max_length,
        dtype=args.embedder_dtype,
        dim=args.embedder_dim,
        device=args.device,
        batch_size=args.embed_batch_size,
    )
