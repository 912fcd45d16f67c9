import csv
import itertools
import json
import re
import shutil
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from batch_recorder import BatchRecorder
from conftest import stdlib_sources
from lightning.pytorch.loggers import CSVLogger

from phi1.callbacks import StepCheckpoint
from phi1.cli import one_line
from phi1.data import MixtureOrder, PackedDataModule, TrainBatches
from phi1.errors import ConfigError
from phi1.model import PhiConfig
from phi1.module import PhiLitModule
from phi1.shards import ShardFormatError, open_shards, sampled_sha256
from phi1.tokenizer import load_tokenizer

SEQ = 64


def test_blocks_round_trip_to_the_documents(code_shards, code_tokenizer):
    dm = PackedDataModule({str(code_shards): 1.0}, seq_len=SEQ, batch_size=4, num_workers=0)
    dm.setup()
    source = dm.sources[0]
    blocks = [source.block(i)[0] for i in range(source.num_blocks)]
    assert all(len(b) == SEQ + 1 for b in blocks)
    assert all(a[-1] == b[0] for a, b in itertools.pairwise(blocks))  # consecutive blocks share one token
    stream = np.concatenate([b[:-1] for b in blocks] + [blocks[-1][-1:]])
    whole = np.concatenate([np.asarray(s) for s in open_shards(code_shards)])
    assert np.array_equal(stream, whole[: len(stream)]) and len(whole) - len(stream) < SEQ
    tokenizer = load_tokenizer(code_tokenizer)
    eos = source.manifest["eos_id"]
    first_doc = whole[: int(np.argmax(whole == eos))].tolist()
    manifest_source = source.manifest["sources"][0]["path"]
    assert tokenizer.decode(first_doc) == open(manifest_source, encoding="utf-8", errors="replace").read()


def reference_order(train_blocks, weights, seed, n, chunk=MixtureOrder.CHUNK):
    """MixtureOrder written the plain way: draw every choice in sequence, count each source's picks as they come."""
    p = np.asarray(weights, dtype=np.float64) / sum(weights)
    choices = np.concatenate(
        [np.random.default_rng([seed, 0, 0, c]).choice(len(p), size=chunk, p=p) for c in range(n // chunk + 1)]
    )
    taken, permutations, out = [0] * len(p), {}, []
    for source in choices[:n].tolist():
        epoch, k = divmod(taken[source], train_blocks[source])
        if (source, epoch) not in permutations:
            rng = np.random.default_rng([seed, 1, source, epoch])
            permutations[source, epoch] = rng.permutation(train_blocks[source]).tolist()
        out.append((source, permutations[source, epoch][k]))
        taken[source] += 1
    return out


def test_mixture_order_is_the_sequential_draw_at_any_offset_and_across_the_chunk_boundary():
    blocks, weights, seed = [50, 1000], [0.2, 0.8], 7
    n = MixtureOrder.CHUNK + 5_000  # one chunk of source choices and part of the next
    expected = reference_order(blocks, weights, seed, n)
    sequential = MixtureOrder(blocks, weights, seed)
    in_order = [pick for start in range(0, n, 4_096) for pick in sequential.samples(start, min(4_096, n - start))]
    assert in_order == expected
    for start in (MixtureOrder.CHUNK - 3, MixtureOrder.CHUNK, 12_345, MixtureOrder.CHUNK + 4_000):
        assert MixtureOrder(blocks, weights, seed).samples(start, 6) == expected[start : start + 6]  # random access
    assert sum(s == 0 for s, _ in expected) / n == pytest.approx(0.2, abs=0.01)
    epochs = [b for s, b in expected if s == 0]
    assert all(sorted(epochs[e * 50 : (e + 1) * 50]) == list(range(50)) for e in range(len(epochs) // 50))
    assert epochs[:50] != epochs[50:100]  # each epoch its own permutation


def test_ranks_see_disjoint_blocks_that_together_follow_the_global_order(code_shards):
    dm = PackedDataModule({str(code_shards): 1.0}, seq_len=SEQ, batch_size=4, num_workers=0)
    dm.setup()
    ranks = [itertools.islice(iter(TrainBatches(dm.sources, dm.order, 4, r, 2, 0, False)), 3) for r in range(2)]
    rank0, rank1 = ([b["tokens"] for b in batches] for batches in ranks)
    single = list(itertools.islice(iter(TrainBatches(dm.sources, dm.order, 4, 0, 1, 0, False)), 6))
    for step in range(3):  # global batch `step` = rank 0's rows then rank 1's
        together = torch.cat([rank0[step], rank1[step]])
        assert torch.equal(together, torch.cat([single[2 * step]["tokens"], single[2 * step + 1]["tokens"]]))
    rows = {tuple(row.tolist()) for batch in rank0 + rank1 for row in batch}
    assert len(rows) == 24


def fit(tmp_path, shards, max_steps, ckpt_path=None, num_workers=0, trainer=None, callbacks=(), **data):
    """A real Trainer on the tiny model: accumulation 2, a checkpoint every 3 steps; returns the batches trained on."""
    recorder = BatchRecorder()
    checkpoints = StepCheckpoint(
        dirpath=tmp_path / "ckpt",
        filename="step{step}",
        every_n_train_steps=3,
        save_top_k=-1,
        auto_insert_metric_name=False,
    )
    trainer = L.Trainer(
        **{
            "accelerator": "cpu",
            "max_steps": max_steps,
            "accumulate_grad_batches": 2,
            "limit_val_batches": 0,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "callbacks": [recorder, checkpoints, *callbacks],
            "default_root_dir": tmp_path,
            **(trainer or {}),
        }
    )
    torch.manual_seed(0)
    module = PhiLitModule(PhiConfig.from_name("tiny", block_size=SEQ), optimizer=partial(torch.optim.AdamW, lr=1e-3))
    sources = shards if isinstance(shards, dict) else {str(shards): 1.0}
    dm = PackedDataModule(sources, num_workers=num_workers, **{"seq_len": SEQ, "batch_size": 2, **data})
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return recorder.batches


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_continues_with_the_same_samples(tmp_path, code_shards, num_workers):
    whole = fit(tmp_path / "a", code_shards, max_steps=6, num_workers=num_workers)
    resumed = fit(
        tmp_path / "b",
        code_shards,
        max_steps=6,
        num_workers=num_workers,
        ckpt_path=tmp_path / "a" / "ckpt" / "step3.ckpt",
    )
    assert len(whole) == 12 and len(resumed) == 6
    assert not (tmp_path / "b" / "ckpt" / "step3.ckpt").exists()  # no second save mid-accumulation at step 3
    for a, b in zip(whole[6:], resumed, strict=True):
        assert torch.equal(a, b)
    one_worker = fit(tmp_path / "c", code_shards, max_steps=6, num_workers=0)
    assert all(torch.equal(a, b) for a, b in zip(whole, one_worker, strict=True))


def test_setup_names_the_mismatch(tmp_path, code_shards):
    small_vocab = PhiLitModule(PhiConfig.from_name("tiny", vocab_size=512))
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False)
    dm = PackedDataModule({str(code_shards): 1.0}, seq_len=SEQ, num_workers=0)
    with pytest.raises(ValueError, match="tokenizer has 1038 tokens but model.config.vocab_size is 512"):
        trainer.fit(small_vocab, datamodule=dm)
    dm = PackedDataModule({str(code_shards): 1.0}, seq_len=1024, num_workers=0)
    with pytest.raises(ValueError, match="data.seq_len=1024 exceeds model.config.block_size=512"):
        trainer.fit(PhiLitModule(PhiConfig.from_name("tiny")), datamodule=dm)
    other = tmp_path / "other"
    shutil.copytree(code_shards, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["tokenizer"]["sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="different tokenizers"):
        PackedDataModule({str(code_shards): 1.0, str(other): 1.0}).setup()
    with pytest.raises(ValueError, match="does not exist"):
        PackedDataModule({str(tmp_path / "absent"): 1.0}).setup()


def test_mask_prompt_serves_loss_masks_from_exercise_shards(tmp_path, code_tokenizer):
    from data_prep.build_shards import build_shards

    exercises = tmp_path / "exercises.jsonl"
    rows = [
        {"prompt": f'def f{i}(x):\n    """Return x plus {i}."""\n', "completion": f"    return x + {i}\n"}
        for i in range(200)
    ]
    exercises.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shards = tmp_path / "shards"
    build_shards(code_tokenizer, shards, [exercises], field="completion", prompt_field="prompt")
    tokenizer = load_tokenizer(code_tokenizer)

    masked = PackedDataModule({str(shards): 1.0}, seq_len=SEQ, batch_size=4, num_workers=0, mask_prompt=True)
    masked.setup()
    batch = next(iter(masked.train_dataloader()))
    assert batch["loss_mask"].shape == batch["tokens"].shape == (4, SEQ + 1)
    for tokens, mask in zip(batch["tokens"], batch["loss_mask"], strict=True):
        in_loss = tokenizer.decode(tokens[mask == 1].tolist())
        left_out = tokenizer.decode(tokens[mask == 0].tolist())
        assert "return x +" in in_loss and "return" not in left_out
        assert '"""Return x plus' in left_out and "Return x plus" not in in_loss
    plain = PackedDataModule({str(shards): 1.0}, seq_len=SEQ, batch_size=4, num_workers=0)
    plain.setup()
    assert "loss_mask" not in next(iter(plain.train_dataloader()))


@pytest.fixture(scope="module")
def more_shards(tmp_path_factory, code_tokenizer):
    """A second source: 15 more stdlib modules, in a folder named `more`."""
    from data_prep.build_shards import build_shards

    out = tmp_path_factory.mktemp("shards") / "more"
    build_shards(code_tokenizer, out, stdlib_sources(75)[60:], shard_tokens=200_000)
    return out


def test_resume_on_a_changed_mixture_is_refused_unless_asked_then_a_recorded_segment_starts(
    tmp_path, code_shards, more_shards
):
    mix, other = ({str(code_shards): a, str(more_shards): b} for a, b in ((0.8, 0.2), (0.5, 0.5)))
    logged = {name: L.pytorch.loggers.CSVLogger(tmp_path / name, name="", version="") for name in ("a", "c")}
    fit(tmp_path / "a", mix, max_steps=3, trainer={"logger": logged["a"]})
    ckpt = tmp_path / "a" / "ckpt" / "step3.ckpt"
    changed = r"data.sources: \{code \(\w+\): 0.8, more \(\w+\): 0.2\} in the checkpoint, \{code \(\w+\): 0.5, more"
    with pytest.raises(ConfigError, match=changed + r".*change_mixture true"):
        fit(tmp_path / "b", other, max_steps=6, ckpt_path=ckpt)
    remixed = fit(
        tmp_path / "c", other, max_steps=6, ckpt_path=ckpt, change_mixture=True, trainer={"logger": logged["c"]}
    )
    again = fit(tmp_path / "d", other, max_steps=6, ckpt_path=ckpt, change_mixture=True)
    for name, step, shares in (("a", 0, ["0.8", "0.2"]), ("c", 3, ["0.5", "0.5"])):  # the mixture in the curves
        rows = list(csv.DictReader(open(tmp_path / name / "metrics.csv")))
        [row] = [r for r in rows if r.get("data/weight/code")]
        assert (int(row["step"]), [row["data/weight/code"], row["data/weight/more"]]) == (step, shares)
    assert len(remixed) == 6 and all(torch.equal(a, b) for a, b in zip(remixed, again, strict=True))
    state = torch.load(tmp_path / "c" / "ckpt" / "step6.ckpt", weights_only=True)["PackedDataModule"]
    first, second = state["segments"]
    assert second["start"] == 3 * 2 * 2 and list(second["weights"].values()) == [0.5, 0.5]
    assert sum(second["offsets"].values()) == 12 and second["previous"].startswith("{code")  # each source goes on
    fit(tmp_path / "c", other, max_steps=9, ckpt_path=tmp_path / "c" / "ckpt" / "step6.ckpt")  # no flag needed now
    dm = PackedDataModule(other, seq_len=SEQ, batch_size=2, num_workers=0, change_mixture=True)
    dm.load_state_dict(torch.load(ckpt, weights_only=True)["PackedDataModule"])
    picks = dm.order.samples(12, 20_000)
    assert sum(s == 1 for s, _ in picks) / len(picks) == pytest.approx(0.5, abs=0.02)  # the new weights


def test_resume_refuses_data_changed_in_place_another_seq_len_or_no_data_state(tmp_path, code_shards):
    data = tmp_path / "code"
    shutil.copytree(code_shards, data)
    fit(tmp_path / "a", data, max_steps=3)
    ckpt = tmp_path / "a" / "ckpt" / "step3.ckpt"
    with pytest.raises(ConfigError, match="data.seq_len: 64 in the checkpoint, 32 now"):
        fit(tmp_path / "b", data, max_steps=6, ckpt_path=ckpt, seq_len=32)
    tokens = np.memmap(data / "shard_00000.bin", dtype=np.uint16, mode="r+")
    tokens[0] = 7 if tokens[0] != 7 else 8  # same size, one token changed
    tokens.flush()
    with pytest.raises(ConfigError, match=f"{data}: its bytes changed since the build"):  # any launch
        fit(tmp_path / "new", data, max_steps=1)
    manifest = json.loads((data / "manifest.json").read_text())
    del manifest["sampled_sha256"]  # a build from before manifests held it: the checkpoint's checksum still holds
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=f"{data}: its bytes changed in place since the checkpoint"):
        fit(tmp_path / "b", data, max_steps=6, ckpt_path=ckpt)
    with pytest.raises(ShardFormatError, match=f"{data / 'shard_00000.bin'}: sha256 .* differs from the manifest"):
        PackedDataModule({str(data): 1.0}, verify_sha256=True).setup()
    bare = torch.load(ckpt, weights_only=True)
    del bare["PackedDataModule"]
    torch.save(bare, tmp_path / "bare.ckpt")
    with pytest.raises(ConfigError, match="bare.ckpt holds no PackedDataModule state"):
        fit(tmp_path / "c", code_shards, max_steps=6, ckpt_path=tmp_path / "bare.ckpt")


def test_finite_epochs_continue_the_stream_and_an_endless_one_needs_max_steps(tmp_path, code_shards):
    epochs = fit(tmp_path / "a", code_shards, max_steps=-1, trainer={"limit_train_batches": 4, "max_epochs": 3})
    endless = fit(tmp_path / "b", code_shards, max_steps=6)
    assert len(epochs) == len(endless) == 12 and all(torch.equal(a, b) for a, b in zip(epochs, endless, strict=True))
    with pytest.raises(ConfigError, match="trainer.max_steps is not set and the training stream is endless"):
        fit(tmp_path / "c", code_shards, max_steps=-1)


def test_validation_interleaves_the_sources_and_logs_each(tmp_path, code_shards, more_shards):
    mix = {str(code_shards): 0.9, str(more_shards): 0.1}
    dm = PackedDataModule(mix, seq_len=SEQ, batch_size=4, num_workers=0, val_fraction=0.05)
    dm.setup()
    assert dm.names == ["code", "more"]
    assert next(iter(dm.val_dataloader()))["source"].tolist() == [0, 1, 0, 1]
    trainer = {"limit_val_batches": 2, "val_check_interval": 4, "logger": CSVLogger(tmp_path, name="", version="")}
    repeats = r"the schedule repeats more [\d.e-]+ times, more than data.warn_epochs=0.0001"
    with pytest.warns(UserWarning, match=repeats):
        fit(tmp_path, mix, max_steps=2, trainer=trainer, val_fraction=0.05, warn_epochs=0.0001)
    row = next(r for r in csv.DictReader(open(tmp_path / "metrics.csv")) if r["val/loss"])
    code, more = float(row["val/loss/code"]), float(row["val/loss/more"])
    assert code != more and float(row["val/loss"]) == pytest.approx((code + more) / 2, rel=1e-5)  # 4 rows each


def test_an_out_of_range_token_id_names_its_shard_file(tmp_path, code_shards):
    data = tmp_path / "code"
    shutil.copytree(code_shards, data)
    for shard in sorted(data.glob("shard_*.bin")):  # a bad id in every block; the tokenizer has 1,038 tokens
        tokens = np.memmap(shard, dtype=np.uint16, mode="r+")
        tokens[::SEQ] = 65_000
        tokens.flush()
    manifest = json.loads((data / "manifest.json").read_text())  # bad ids the build itself wrote: its checksum
    manifest["sampled_sha256"] = sampled_sha256(data, manifest)
    (data / "manifest.json").write_text(json.dumps(manifest))
    dm = PackedDataModule({str(data): 1.0}, seq_len=SEQ, batch_size=2, num_workers=1)
    dm.setup()
    with pytest.raises(ConfigError) as error:  # raised in a DataLoader worker, re-raised here
        next(iter(dm.train_dataloader()))
    assert re.match(rf"{data}/shard_0000\d.bin: token \d+ ", one_line(error.value))
    assert one_line(error.value).endswith("has id 65000, outside the tokenizer's 1038; rebuild the folder")
