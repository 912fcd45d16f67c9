"""DataModule streaming packed token shards into `fit` (paper §2.3: 2048-token slices of one EOS-joined stream).

Each source is a shard folder (`data_prep/build_shards.py`), read as one token stream and cut into
blocks of `seq_len + 1` tokens (inputs and shifted targets; consecutive blocks share one token). The last
`val_fraction` of each source's blocks is held out for validation; validation interleaves the sources'
held-out blocks and the module logs its loss per source.

Training order: global sample i draws its source from the mixing weights (seeded, so it is a pure
function of i) and takes that source's next block in a per-epoch seeded permutation; a source that runs
out starts a new epoch of its own. Rank r of W serves global samples (b·W + r)·B ... + B - 1 as its b-th
batch, and DataLoader worker w of K builds batches b ≡ w (mod K), so every rank and worker sees a disjoint
part and the batches arrive in the same order for any K. Workers draw no random numbers.

Resume: the checkpoint (`state_dict`) holds the number of samples consumed and a fingerprint of the data
(sources in order, weights, each build's identity and a sampled checksum of its bytes, seq_len,
val_fraction, the tokenizer). A resume continues with exactly the samples an uninterrupted run would, and
refuses data that changed. `change_mixture` changes the mixture on purpose: from the resume point on, a
new stream segment (its own seed) draws from the new weights, and each source continues its epoch where
it stood; the segments are recorded in the checkpoint.
"""

import math
from functools import partial
from itertools import zip_longest
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from phi1.errors import ConfigError
from phi1.shards import manifest_hash, open_loss_masks, open_shards, read_manifest, sampled_sha256, verify_sha256


class PackedSource:
    """One shard folder as a stream of overlapping (seq_len + 1)-token blocks. Memory maps open lazily,
    in the process that reads them (so DataLoader workers never pickle a map)."""

    def __init__(self, folder: str, seq_len: int, with_mask: bool):
        self.folder, self.seq_len = folder, seq_len
        self.manifest = read_manifest(folder)
        self.with_mask = with_mask and self.manifest["loss_mask"]
        self.num_tokens, self.vocab_size = self.manifest["num_tokens"], self.manifest["vocab_size"]
        self.num_blocks = (self.num_tokens - 1) // seq_len
        self.starts = np.cumsum([0] + [s["num_tokens"] for s in self.manifest["shards"]])
        self.tokens = self.masks = None

    def read(self, arrays: list[np.ndarray], start: int, n: int) -> np.ndarray:
        """Tokens start..start+n of the stream, which may cross shard files (a view when they do not)."""
        pieces, shard = [], int(np.searchsorted(self.starts, start, side="right")) - 1
        while n > 0:
            piece = arrays[shard][start - self.starts[shard] : start - self.starts[shard] + n]
            pieces.append(piece)
            start, n, shard = start + len(piece), n - len(piece), shard + 1
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def block(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self.tokens is None:
            self.tokens = open_shards(self.folder)
            self.masks = open_loss_masks(self.folder) if self.with_mask else None
        start, n = i * self.seq_len, self.seq_len + 1
        tokens = self.read(self.tokens, start, n)
        if tokens.max() >= self.vocab_size:  # a corrupt shard; the embedding would fail with no file named
            at = start + int(np.argmax(tokens >= self.vocab_size))
            shard = int(np.searchsorted(self.starts, at, side="right")) - 1
            raise ConfigError(
                f"{Path(self.folder) / self.manifest['shards'][shard]['file']}: token {at - self.starts[shard]} "
                f"has id {int(tokens.max())}, outside the tokenizer's {self.vocab_size}; rebuild the folder"
            )
        mask = self.read(self.masks, start, n) if self.masks is not None else None
        return tokens, mask


class MixtureOrder:
    """Global sample index -> (source, block), a pure function of (seed, index) for any access pattern.

    One stream segment: samples `start` on draw sources by `weights` (a chunk of choices at a time) and
    walk each source's per-epoch permutations, keyed by the source's `keys` (its data identity), from
    `offsets` (blocks of it taken before the segment)."""

    CHUNK = 1 << 16  # source choices are drawn in chunks of this many samples

    def __init__(self, train_blocks, weights, seed, keys=None, offsets=None, segment=0, start=0):
        self.train_blocks, self.seed, self.segment, self.start = train_blocks, seed, segment, start
        self.p = np.asarray(weights, dtype=np.float64) / sum(weights)
        self.keys = list(range(len(weights))) if keys is None else keys
        self.offsets = np.zeros(len(weights), dtype=np.int64) if offsets is None else np.asarray(offsets)
        self.counts_before = [np.zeros(len(weights), dtype=np.int64)]  # per chunk: picks of each source before it
        self.cached_chunk, self.cached_perm = None, {}

    def chunk(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Source choices of chunk c (CHUNK,), and picks of each source before each of them (CHUNK, sources)."""
        if self.cached_chunk is None or self.cached_chunk[0] != c:
            rng = np.random.default_rng([self.seed, 0, self.segment, c])
            choices = rng.choice(len(self.p), size=self.CHUNK, p=self.p)
            picked = choices[:, None] == np.arange(len(self.p))
            before = np.cumsum(picked, axis=0, dtype=np.int32) - picked
            self.cached_chunk = (c, choices, before)
        return self.cached_chunk[1], self.cached_chunk[2]

    def permutation(self, source: int, epoch: int) -> np.ndarray:
        if self.cached_perm.get(source, (None,))[0] != epoch:
            rng = np.random.default_rng([self.seed, 1, self.keys[source], epoch])
            self.cached_perm[source] = (epoch, rng.permutation(self.train_blocks[source]))
        return self.cached_perm[source][1]

    def picks_before(self, i: int) -> np.ndarray:
        """Blocks of each source taken by this segment's samples before global sample i (sources,)."""
        c, offset = divmod(i - self.start, self.CHUNK)
        while len(self.counts_before) <= c:
            choices, before = self.chunk(len(self.counts_before) - 1)
            self.counts_before.append(self.counts_before[-1] + before[-1] + (choices[-1] == np.arange(len(self.p))))
        return self.counts_before[c] + self.chunk(c)[1][offset]

    def samples(self, start: int, n: int) -> list[tuple[int, int]]:
        out = []
        for i in range(start, start + n):
            c, offset = divmod(i - self.start, self.CHUNK)
            before = self.picks_before(i)
            source = int(self.chunk(c)[0][offset])
            epoch, k = divmod(int(self.offsets[source] + before[source]), self.train_blocks[source])
            out.append((source, int(self.permutation(source, epoch)[k])))
        return out


def collate(blocks: list[tuple[np.ndarray, np.ndarray | None]], with_mask: bool) -> dict:
    batch = {"tokens": torch.from_numpy(np.stack([t for t, _ in blocks]).astype(np.int64))}
    if with_mask:
        masks = [m if m is not None else np.ones_like(t, dtype=np.uint8) for t, m in blocks]
        batch["loss_mask"] = torch.from_numpy(np.stack(masks))
    return batch


class TrainBatches(IterableDataset):
    """Endless batches for one rank, from local batch `start_batch` on."""

    def __init__(self, sources, order, batch_size, rank, world_size, start_batch, with_mask):
        self.sources, self.order, self.batch_size = sources, order, batch_size
        self.rank, self.world_size, self.start_batch, self.with_mask = rank, world_size, start_batch, with_mask

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        b = self.start_batch + worker
        while True:
            first = (b * self.world_size + self.rank) * self.batch_size
            picks = self.order.samples(first, self.batch_size)
            yield collate([self.sources[s].block(i) for s, i in picks], self.with_mask)
            b += num_workers


class TrainLoader(DataLoader):
    """The training DataLoader; each `iter()` (a new epoch under `limit_train_batches`, or a resume) starts
    where the stream stands, so a finite epoch never replays the previous one's samples. Worker seeds
    come from (seed, rank, start batch), not from the global random state."""

    def __init__(self, batches: TrainBatches, next_batch, seed: int, **kwargs):
        super().__init__(batches, batch_size=None, generator=torch.Generator(), **kwargs)
        self.next_batch, self.seed = next_batch, seed

    def __iter__(self):
        self.dataset.start_batch = self.next_batch()
        where = [self.seed, self.dataset.rank, self.dataset.start_batch]
        self.generator.manual_seed(int(np.random.SeedSequence(where).generate_state(1, np.uint64)[0]))
        return super().__iter__()


class ValBlocks(Dataset):
    """The held-out tail of every source, interleaved (one block of each source in turn), so any prefix
    (`limit_val_batches`) covers every source; a batch carries each block's `source` index."""

    def __init__(self, sources, train_blocks, with_mask):
        self.sources, self.with_mask = sources, with_mask
        tails = [[(s, i) for i in range(train_blocks[s], src.num_blocks)] for s, src in enumerate(sources)]
        self.index = [pick for turn in zip_longest(*tails) for pick in turn if pick is not None]

    def __len__(self):
        return len(self.index)

    def __getitem__(self, k):
        s, i = self.index[k]
        return (*self.sources[s].block(i), s)


def collate_val(blocks: list, with_mask: bool) -> dict:
    batch = collate([(t, m) for t, m, _ in blocks], with_mask)
    batch["source"] = torch.tensor([s for _, _, s in blocks])
    return batch


def source_names(folders: list[str]) -> list[str]:
    """Readable unique names for the sources: each folder's name, with as many parent folders as it takes."""
    parts = [Path(f).resolve().parts for f in folders]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    raise ConfigError(f"data.sources lists the same folder twice: {folders}")


class PackedDataModule(L.LightningDataModule):
    def __init__(
        self,
        sources: dict[str, float],
        seq_len: int = 2048,
        batch_size: int = 8,
        val_fraction: float = 0.001,
        num_workers: int = 2,
        seed: int = 1234,
        mask_prompt: bool = False,
        change_mixture: bool = False,
        verify_sha256: bool = False,
        warn_epochs: float = 10.0,
    ):
        """
        Args:
            sources: shard folder -> mixing weight (relative; e.g. filtered code 0.85, textbooks 0.15).
            seq_len: tokens per training sequence (phi-1: 2048); blocks hold seq_len + 1.
            batch_size: sequences per device per micro-batch.
            val_fraction: share of each source's blocks (its tail, at least one) held out for validation.
            num_workers: DataLoader worker processes.
            seed: the sample order; the same seed gives the same order on any number of workers.
            mask_prompt: leave prompt tokens out of the loss where a source has loss masks (finetuning
                ablation; the paper trains on every token, so the default is off).
            change_mixture: on resume, accept sources or weights that differ from the checkpoint's and
                draw from them from the resume point on (a new, deterministic stream segment); without it
                such a resume is refused.
            verify_sha256: check every shard against its manifest's sha256 at setup (reads all the data
                once); without it setup checks sizes, and on resume a sampled checksum.
            warn_epochs: warn at the start of `fit` when the schedule repeats a source more often.
        """
        super().__init__()
        if not sources:
            raise ConfigError("data.sources is empty: give at least one shard folder and its weight")
        for folder, weight in sources.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight < math.inf:
                raise ConfigError(f"data.sources[{folder!r}]: weight {weight} must be a positive finite number")
        for name, value, least in (
            ("seq_len", seq_len, 1),
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"data.{name}={value!r}: must be an integer of at least {least}")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={val_fraction} must lie in (0, 1)")
        self.source_weights, self.seq_len, self.batch_size = dict(sources), seq_len, batch_size
        self.val_fraction, self.num_workers, self.seed, self.mask_prompt = val_fraction, num_workers, seed, mask_prompt
        self.change_mixture, self.verify_sha256, self.warn_epochs = change_mixture, verify_sha256, warn_epochs
        self.consumed_samples = 0  # before this run's first batch; restored from a checkpoint by load_state_dict
        self.batches_before = 0  # the training loop's batch count when this run's train loader was made
        self.restored = False
        self.sources = None
        self._sampled = {}  # folder -> sampled sha256 of its bytes (phi1.shards.sampled_sha256)

    # -- sources ------------------------------------------------------------------------------------------

    def open_sources(self):
        """Read and check every source's manifest (and, with verify_sha256, its bytes). Idempotent; the
        CLI calls it before any model or process group is set up, so missing data is reported first."""
        if self.sources is not None:
            return
        for folder in self.source_weights:
            if not Path(folder).is_dir():
                raise ConfigError(
                    f"data.sources: shard folder {folder} does not exist; build it with `python -m "
                    f"data_prep.build_shards --tokenizer TOKENIZER --out {folder} DOCUMENTS.jsonl ...`"
                )
        sources = [PackedSource(str(Path(f)), self.seq_len, self.mask_prompt) for f in self.source_weights]
        first = sources[0]
        for src in sources:
            if src.num_blocks < 2:
                raise ConfigError(
                    f"data.sources: {src.folder} holds {src.num_tokens} tokens, fewer than two blocks of "
                    f"seq_len={self.seq_len} + 1"
                )
            if src.manifest["tokenizer"]["sha256"] != first.manifest["tokenizer"]["sha256"]:
                raise ConfigError(f"data.sources: {src.folder} and {first.folder} were built with different tokenizers")
            if self.verify_sha256:
                verify_sha256(src.folder, src.manifest)
            elif "sampled_sha256" in src.manifest and src.manifest["sampled_sha256"] != self.sampled(src):
                raise ConfigError(
                    f"data.sources: {src.folder}: its bytes changed since the build (sampled sha256 differs from "
                    "the manifest's); rebuild it, or find the changed files with data.init_args.verify_sha256 true"
                )
        self.names = source_names([s.folder for s in sources])
        self.identities = [manifest_hash(s.manifest) for s in sources]
        for i, identity in enumerate(self.identities):
            if identity in self.identities[:i]:
                twin = sources[self.identities.index(identity)].folder
                raise ConfigError(f"data.sources: {sources[i].folder} holds the same shards as {twin}; list it once")
        self.train_blocks = [s.num_blocks - max(1, int(s.num_blocks * self.val_fraction)) for s in sources]
        weights = dict(zip(self.identities, self.source_weights.values(), strict=True))
        self.segments = [{"start": 0, "weights": weights, "offsets": {}}]  # offsets: blocks taken before, per source
        self.sources = sources
        self.order = self.segment_order()

    def segment_order(self) -> MixtureOrder:
        """The MixtureOrder of the current (last) stream segment."""
        segment, index = self.segments[-1], len(self.segments) - 1
        keys = [int(identity[:15], 16) for identity in self.identities]
        offsets = [segment["offsets"].get(identity, 0) for identity in self.identities]
        weights = list(segment["weights"].values())
        return MixtureOrder(self.train_blocks, weights, self.seed, keys, offsets, index, segment["start"])

    def fingerprint(self) -> dict:
        """What the sample stream depends on; a checkpoint records it and a resume compares it."""
        return {
            "sources": [
                {
                    "folder": s.folder,
                    "name": n,
                    "identity": i,
                    "num_tokens": s.num_tokens,
                    "weight": w,
                    "sampled_sha256": self.sampled(s),
                }
                for s, n, i, w in zip(
                    self.sources, self.names, self.identities, self.source_weights.values(), strict=True
                )
            ],
            "seq_len": self.seq_len,
            "val_fraction": self.val_fraction,
            "tokenizer_sha256": self.sources[0].manifest["tokenizer"]["sha256"],
        }

    def sampled(self, source: "PackedSource") -> str:
        """The source's sampled sha256, computed once per process."""
        if source.folder not in self._sampled:
            self._sampled[source.folder] = sampled_sha256(source.folder, source.manifest)
        return self._sampled[source.folder]

    def setup(self, stage: str | None = None):
        self.open_sources()
        model = self.trainer.lightning_module if self.trainer is not None else None
        config = getattr(model, "config", None)
        if config is not None:
            if self.sources[0].vocab_size > config.vocab_size:
                raise ConfigError(
                    f"data.sources: the shards' tokenizer has {self.sources[0].vocab_size} tokens but "
                    f"model.config.vocab_size is {config.vocab_size}; build shards with the model's tokenizer"
                )
            if self.seq_len > config.block_size:
                raise ConfigError(f"data.seq_len={self.seq_len} exceeds model.config.block_size={config.block_size}")
        if stage == "fit" and self.trainer is not None:
            self.report_epochs()

    def report_epochs(self):
        """Log how many epochs of each source the schedule implies; warn above `warn_epochs`."""
        trainer = self.trainer
        limit = trainer.limit_train_batches
        if trainer.max_steps > 0:
            samples = trainer.max_steps * trainer.accumulate_grad_batches * trainer.world_size * self.batch_size
        elif isinstance(limit, int) and trainer.max_epochs not in (None, -1):
            samples = limit * trainer.max_epochs * trainer.world_size * self.batch_size
        else:
            raise ConfigError(
                "trainer.max_steps is not set and the training stream is endless: set trainer.max_steps "
                "(or an integer trainer.limit_train_batches with trainer.max_epochs)"
            )
        weights = np.asarray(list(self.source_weights.values()), dtype=np.float64)
        epochs = weights / weights.sum() * samples / np.asarray(self.train_blocks)
        detail = ", ".join(
            f"{name} {e:.3g} epochs of {blocks * self.seq_len:,} tokens"
            for name, e, blocks in zip(self.names, epochs, self.train_blocks, strict=True)
        )
        rank_zero_info(f"data: the schedule's {samples:,} sequences of {self.seq_len} tokens take {detail}")
        for e, name in zip(epochs, self.names, strict=True):
            if e > self.warn_epochs:
                rank_zero_warn(
                    f"data: the schedule repeats {name} {e:.3g} times, more than data.warn_epochs={self.warn_epochs}"
                )

    @property
    def with_mask(self) -> bool:
        return any(s.with_mask for s in self.sources)

    def rank_and_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    # -- loaders ------------------------------------------------------------------------------------------

    def train_dataloader(self):
        if self.trainer is not None and self.trainer.ckpt_path and not self.restored:
            raise ConfigError(
                f"--ckpt_path {self.trainer.ckpt_path} holds no {type(self).__name__} state, so the run cannot "
                "continue its sample stream; resume from a checkpoint `fit` wrote with this DataModule, or start "
                "a new run from its weights with --model.init_from"
            )
        rank, world = self.rank_and_world()
        self.batches_before = self.batches_taken()
        per_step = world * self.batch_size
        if self.consumed_samples % per_step:
            raise ConfigError(
                f"the checkpoint consumed {self.consumed_samples} samples, not a multiple of world size {world} "
                f"× data.batch_size {self.batch_size}; resume with a layout that divides it"
            )
        self.log_mixture()
        batches = TrainBatches(self.sources, self.order, self.batch_size, rank, world, 0, self.with_mask)
        return TrainLoader(
            batches,
            lambda: self.samples_consumed() // per_step,
            self.seed,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
        )

    def log_mixture(self):
        """`data/weight/<source>`, the share of each source in the stream from this launch's first step on, to the
        run's loggers: a mixture changed with `change_mixture` shows as a step in the curves at the resume point."""
        if self.trainer is None or not self.trainer.is_global_zero:
            return
        weights = self.segments[-1]["weights"]
        total = sum(weights.values())
        shares = {f"data/weight/{n}": weights[i] / total for n, i in zip(self.names, self.identities, strict=True)}
        for logger in self.trainer.loggers:
            logger.log_metrics(shares, step=self.trainer.global_step)

    def val_dataloader(self):
        blocks = ValBlocks(self.sources, self.train_blocks, self.with_mask)
        return DataLoader(
            blocks,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=partial(collate_val, with_mask=self.with_mask),
            generator=torch.Generator().manual_seed(self.seed),  # leaves the global random state alone
        )

    # -- resume -------------------------------------------------------------------------------------------

    def batches_taken(self) -> int:
        """Batches the training loop has trained on, over this and earlier runs (`processed`, not `ready`: a
        checkpoint written mid-step has not trained on the batch in hand)."""
        return self.trainer.fit_loop.epoch_loop.batch_progress.total.processed if self.trainer else 0

    def samples_consumed(self) -> int:
        """Samples consumed by all ranks so far (a world-size-independent count, so a resume may change layout)."""
        _, world = self.rank_and_world()
        return self.consumed_samples + (self.batches_taken() - self.batches_before) * world * self.batch_size

    def state_dict(self) -> dict:
        return {
            "consumed_samples": self.samples_consumed(),
            "seed": self.seed,
            "fingerprint": self.fingerprint(),
            "segments": self.segments,
        }

    def load_state_dict(self, state: dict):
        """Continue the checkpoint's stream; refuse (before the first step) data that is not the checkpoint's."""
        if "fingerprint" not in state:
            raise ConfigError(
                "the checkpoint's data state has no fingerprint (an older phi1 wrote it), so its data cannot be "
                "checked; start a new run from its weights with --model.init_from"
            )
        self.open_sources()
        old, new = state["fingerprint"], self.fingerprint()
        changes = [
            f"data.{field}: {old[field]} in the checkpoint, {new[field]} now"
            for field in ("seq_len", "val_fraction")
            if old[field] != new[field]
        ]
        if state["seed"] != self.seed:
            changes.append(f"data.seed: {state['seed']} in the checkpoint, {self.seed} now")
        if old["tokenizer_sha256"] != new["tokenizer_sha256"]:
            changes.append(
                f"the shards' tokenizer: sha256 {old['tokenizer_sha256'][:12]}... in the checkpoint, "
                f"{new['tokenizer_sha256'][:12]}... now"
            )
        was = {s["identity"]: s for s in old["sources"]}
        for source in new["sources"]:
            before = was.get(source["identity"])
            if before is not None and before["sampled_sha256"] != source["sampled_sha256"]:
                changes.append(f"{source['folder']}: its bytes changed in place since the checkpoint (sampled sha256)")
        remix = mixture(old) != mixture(new)
        if remix and not self.change_mixture:
            changes.append(f"data.sources: {mixture_text(old)} in the checkpoint, {mixture_text(new)} now")
        if changes:
            hint = (
                "; to change the mixture from here on purpose, add --data.init_args.change_mixture true"
                if remix
                else ""
            )
            raise ConfigError(f"the data differs from the checkpoint's: {'; '.join(changes)}{hint}")
        self.consumed_samples = state["consumed_samples"]
        self.segments = [dict(s) for s in state["segments"]]
        if remix:
            self.start_segment(old)
        self.order = self.segment_order()
        self.restored = True

    def start_segment(self, old: dict):
        """A new stream segment from the resume point: the new weights, each source continuing its epoch."""
        last = self.segments[-1]
        weights = list(last["weights"].values())  # counting the last segment's source choices needs no block counts
        segment = len(self.segments) - 1
        order = MixtureOrder([1] * len(weights), weights, self.seed, segment=segment, start=last["start"])
        offsets = dict(last["offsets"])
        for identity, picks in zip(last["weights"], order.picks_before(self.consumed_samples), strict=True):
            offsets[identity] = offsets.get(identity, 0) + int(picks)
        self.segments.append(
            {
                "start": self.consumed_samples,
                "weights": dict(zip(self.identities, self.source_weights.values(), strict=True)),
                "offsets": offsets,
                "previous": mixture_text(old),
            }
        )
        rank_zero_info(
            f"data: mixture changed at sample {self.consumed_samples:,} (segment {len(self.segments) - 1}): "
            f"{mixture_text(old)} -> {mixture_text(self.fingerprint())}"
        )


def mixture(fingerprint: dict) -> list[tuple[str, float]]:
    """The sources (by identity) and weights of a data fingerprint, in order."""
    return [(s["identity"], s["weight"]) for s in fingerprint["sources"]]


def mixture_text(fingerprint: dict) -> str:
    return "{" + ", ".join(f"{s['name']} ({s['identity'][:8]}): {s['weight']}" for s in fingerprint["sources"]) + "}"
