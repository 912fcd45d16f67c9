"""DataModule streaming packed token shards into `fit` (paper §2.3: 2048-token slices of one EOS-joined stream).

Each source is a shard folder (`data_prep/build_shards.py`), read as one token stream and cut into
blocks of `seq_len + 1` tokens (inputs and shifted targets; consecutive blocks share one token). The last
`val_fraction` of each source's blocks is held out for validation.

Training order: global sample i draws its source from the mixing weights (seeded, so it is a pure
function of i) and takes that source's next block in a per-epoch seeded permutation; a source that runs
out starts a new epoch of its own. Rank r of W serves global samples (b·W + r)·B ... + B - 1 as its b-th
batch, and DataLoader worker w of K builds batches b ≡ w (mod K), so every rank and worker sees a disjoint
part and the batches arrive in the same order for any K. The number of samples consumed goes into the
checkpoint (`state_dict`), so a resumed run continues with exactly the samples an uninterrupted one would.
"""

from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from phi1.shards import open_loss_masks, open_shards, read_manifest


class PackedSource:
    """One shard folder as a stream of overlapping (seq_len + 1)-token blocks. Memory maps open lazily,
    in the process that reads them (so DataLoader workers never pickle a map)."""

    def __init__(self, folder: str, seq_len: int, with_mask: bool):
        self.folder, self.seq_len = folder, seq_len
        self.manifest = read_manifest(folder)
        self.with_mask = with_mask and self.manifest["loss_mask"]
        self.num_tokens = self.manifest["num_tokens"]
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
        mask = self.read(self.masks, start, n) if self.masks is not None else None
        return self.read(self.tokens, start, n), mask


class MixtureOrder:
    """Global sample index -> (source, block), a pure function of (seed, index) for any access pattern."""

    CHUNK = 1 << 16  # source choices are drawn in chunks of this many samples

    def __init__(self, train_blocks: list[int], weights: list[float], seed: int):
        self.train_blocks, self.seed = train_blocks, seed
        self.p = np.asarray(weights, dtype=np.float64) / sum(weights)
        self.counts_before = [np.zeros(len(weights), dtype=np.int64)]  # per chunk: picks of each source before it
        self.cached_chunk, self.cached_perm = None, {}

    def chunk(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Source choices of chunk c (CHUNK,), and picks of each source before each of them (CHUNK, sources)."""
        if self.cached_chunk is None or self.cached_chunk[0] != c:
            choices = np.random.default_rng([self.seed, 0, c]).choice(len(self.p), size=self.CHUNK, p=self.p)
            picked = choices[:, None] == np.arange(len(self.p))
            before = np.cumsum(picked, axis=0, dtype=np.int32) - picked
            self.cached_chunk = (c, choices, before)
        return self.cached_chunk[1], self.cached_chunk[2]

    def permutation(self, source: int, epoch: int) -> np.ndarray:
        if self.cached_perm.get(source, (None,))[0] != epoch:
            rng = np.random.default_rng([self.seed, 1, source, epoch])
            self.cached_perm[source] = (epoch, rng.permutation(self.train_blocks[source]))
        return self.cached_perm[source][1]

    def samples(self, start: int, n: int) -> list[tuple[int, int]]:
        out = []
        for i in range(start, start + n):
            c, offset = divmod(i, self.CHUNK)
            while len(self.counts_before) <= c:
                choices, before = self.chunk(len(self.counts_before) - 1)
                self.counts_before.append(self.counts_before[-1] + before[-1] + (choices[-1] == np.arange(len(self.p))))
            choices, before = self.chunk(c)
            source = int(choices[offset])
            epoch, k = divmod(int(self.counts_before[c][source] + before[offset, source]), self.train_blocks[source])
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


class ValBlocks(Dataset):
    """The held-out tail of every source, in order."""

    def __init__(self, sources, train_blocks, with_mask):
        self.sources, self.with_mask = sources, with_mask
        self.index = [(s, i) for s, src in enumerate(sources) for i in range(train_blocks[s], src.num_blocks)]

    def __len__(self):
        return len(self.index)

    def __getitem__(self, k):
        s, i = self.index[k]
        return self.sources[s].block(i)


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
        """
        super().__init__()
        if not sources:
            raise ValueError("data.sources is empty: give at least one shard folder and its weight")
        for folder, weight in sources.items():
            if not weight > 0:
                raise ValueError(f"data.sources[{folder!r}]: weight {weight} must be positive")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction={val_fraction} must lie in (0, 1)")
        self.source_weights, self.seq_len, self.batch_size = dict(sources), seq_len, batch_size
        self.val_fraction, self.num_workers, self.seed, self.mask_prompt = val_fraction, num_workers, seed, mask_prompt
        self.consumed_samples = 0  # before this run's first batch; restored from a checkpoint by load_state_dict
        self.batches_before = 0  # the training loop's batch count when this run's train loader was made
        self.sources = None

    def setup(self, stage: str | None = None):
        if self.sources is not None:
            return
        self.sources = [PackedSource(str(Path(f)), self.seq_len, self.mask_prompt) for f in self.source_weights]
        self.check_sources()
        self.train_blocks = [s.num_blocks - max(1, int(s.num_blocks * self.val_fraction)) for s in self.sources]
        self.order = MixtureOrder(self.train_blocks, list(self.source_weights.values()), self.seed)

    def check_sources(self):
        first = self.sources[0]
        for src in self.sources:
            if src.num_blocks < 2:
                raise ValueError(
                    f"data.sources: {src.folder} holds {src.num_tokens} tokens, fewer than two blocks of "
                    f"seq_len={self.seq_len} + 1"
                )
            if src.manifest["tokenizer"]["sha256"] != first.manifest["tokenizer"]["sha256"]:
                raise ValueError(f"data.sources: {src.folder} and {first.folder} were built with different tokenizers")
        model = self.trainer.lightning_module if self.trainer is not None else None
        config = getattr(model, "config", None)
        if config is None:
            return
        if first.manifest["vocab_size"] > config.vocab_size:
            raise ValueError(
                f"data.sources: the shards' tokenizer has {first.manifest['vocab_size']} tokens but "
                f"model.config.vocab_size is {config.vocab_size}; build shards with the model's tokenizer"
            )
        if self.seq_len > config.block_size:
            raise ValueError(f"data.seq_len={self.seq_len} exceeds model.config.block_size={config.block_size}")

    @property
    def with_mask(self) -> bool:
        return any(s.with_mask for s in self.sources)

    def rank_and_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self):
        rank, world = self.rank_and_world()
        self.batches_before = self.batches_taken()
        per_step = world * self.batch_size
        if self.consumed_samples % per_step:
            raise ValueError(
                f"the checkpoint consumed {self.consumed_samples} samples, not a multiple of world size {world} "
                f"× data.batch_size {self.batch_size}; resume with a layout that divides it"
            )
        batches = TrainBatches(
            self.sources, self.order, self.batch_size, rank, world, self.consumed_samples // per_step, self.with_mask
        )
        return DataLoader(batches, batch_size=None, num_workers=self.num_workers, pin_memory=torch.cuda.is_available())

    def val_dataloader(self):
        blocks = ValBlocks(self.sources, self.train_blocks, self.with_mask)
        return DataLoader(
            blocks,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=partial(collate, with_mask=self.with_mask),
        )

    def batches_taken(self) -> int:
        """Batches the training loop has trained on, over this and earlier runs (`processed`, not `ready`: a
        checkpoint written mid-step, by a SLURM requeue for one, has not trained on the batch in hand)."""
        return self.trainer.fit_loop.epoch_loop.batch_progress.total.processed if self.trainer else 0

    def state_dict(self) -> dict:
        """Samples consumed by all ranks so far (a world-size-independent count, so a resume may change layout)."""
        _, world = self.rank_and_world()
        taken = self.batches_taken() - self.batches_before
        return {"consumed_samples": self.consumed_samples + taken * world * self.batch_size, "seed": self.seed}

    def load_state_dict(self, state: dict):
        if state["seed"] != self.seed:
            raise ValueError(
                f"data.seed={self.seed} differs from the checkpoint's {state['seed']}; resume with the same"
            )
        self.consumed_samples = state["consumed_samples"]
