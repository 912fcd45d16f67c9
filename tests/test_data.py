import itertools
import json
import shutil
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from batch_recorder import BatchRecorder

from phi1.callbacks import StepCheckpoint
from phi1.data import MixtureOrder, PackedDataModule, TrainBatches
from phi1.model import PhiConfig
from phi1.module import PhiLitModule
from phi1.shards import open_shards
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


def test_mixing_weights_and_epochs():
    order = MixtureOrder(train_blocks=[50, 1000], weights=[0.2, 0.8], seed=7)
    picks = order.samples(0, 20_000)
    share = sum(s == 0 for s, _ in picks) / len(picks)
    assert share == pytest.approx(0.2, abs=0.01)
    first_epoch = [b for s, b in picks if s == 0][:50]
    assert sorted(first_epoch) == list(range(50))  # each block once per epoch of its source
    assert order.samples(12_345, 10) == MixtureOrder([50, 1000], [0.2, 0.8], seed=7).samples(12_345, 10)
    assert picks[70_000 % 20_000 : 70_000 % 20_000 + 5] != order.samples(70_000, 5)  # crosses chunks, still pure
    assert order.samples(70_000, 5) == MixtureOrder([50, 1000], [0.2, 0.8], seed=7).samples(70_000, 5)


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


def fit(tmp_path, shards, max_steps, ckpt_path=None, num_workers=0, **data):
    recorder = BatchRecorder()
    checkpoints = StepCheckpoint(
        dirpath=tmp_path / "ckpt",
        filename="step{step}",
        every_n_train_steps=3,
        save_top_k=-1,
        auto_insert_metric_name=False,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        accumulate_grad_batches=2,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        callbacks=[recorder, checkpoints],
        default_root_dir=tmp_path,
    )
    torch.manual_seed(0)
    module = PhiLitModule(PhiConfig.from_name("tiny", block_size=SEQ), optimizer=partial(torch.optim.AdamW, lr=1e-3))
    dm = PackedDataModule({str(shards): 1.0}, seq_len=SEQ, batch_size=2, num_workers=num_workers, **data)
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


def test_ddp_two_processes_resume_exactly(tmp_path, code_shards, run_python, repo_root):
    def cli(out, *extra):
        overlay = {
            "trainer": {
                "strategy": "ddp",
                "devices": 2,
                "max_steps": 4,
                "val_check_interval": 100,
                "enable_progress_bar": False,
                "logger": False,
                "default_root_dir": str(out),
                "callbacks": [
                    {
                        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                        "init_args": {
                            "dirpath": str(out / "ckpt"),
                            "every_n_train_steps": 2,
                            "save_top_k": -1,
                            "filename": "step{step}",
                            "auto_insert_metric_name": False,
                        },
                    },
                    {"class_path": "batch_recorder.BatchRecorder", "init_args": {"out_dir": str(out / "batches")}},
                ],
            },
            "model": {"config": {"block_size": 64}, "scheduler": {"init_args": {"warmup_steps": 1}}},
            "data": {"init_args": {"sources": {str(code_shards): 1.0}, "seq_len": 64, "num_workers": 1}},
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "overlay.yaml").write_text(json.dumps(overlay))
        return run_python(
            "-m",
            "phi1.cli",
            "fit",
            "--config",
            str(repo_root / "experiments" / "tiny.yaml"),
            "--config",
            str(out / "overlay.yaml"),
            *extra,
            env={"PYTHONPATH": str(repo_root / "tests")},
            timeout=300,
        )

    cli(tmp_path / "a")
    ckpt = tmp_path / "a" / "ckpt" / "step2.ckpt"
    cli(tmp_path / "b", "--ckpt_path", str(ckpt))
    for rank in range(2):
        whole = torch.load(tmp_path / "a" / "batches" / f"rank{rank}.pt")
        resumed = torch.load(tmp_path / "b" / "batches" / f"rank{rank}.pt")
        assert len(whole) == 4 and len(resumed) == 2
        assert all(torch.equal(a, b) for a, b in zip(whole[2:], resumed, strict=True))
    rank0 = torch.cat(torch.load(tmp_path / "a" / "batches" / "rank0.pt"))
    rank1 = torch.cat(torch.load(tmp_path / "a" / "batches" / "rank1.pt"))
    assert not any(torch.equal(a, b) for a in rank0 for b in rank1)


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
