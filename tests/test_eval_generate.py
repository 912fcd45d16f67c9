"""evals.generate (the sampling CLI, resume, refusals) and the pass@1 callback during fit."""

import json

import lightning as L
import pytest
import torch
from test_module import in_memory_batches

from evals.callback import PassAtOneCallback
from evals.generate import main
from evals.problems import load_problems
from phi1.checkpoint import load_checkpoint, save_model
from phi1.data import PackedDataModule
from phi1.errors import ConfigError
from phi1.model import Phi, PhiConfig
from phi1.module import PhiLitModule
from phi1.tokenizer import eos_id, load_tokenizer, tokenizer_hash

HUMANEVAL_STOPS = ["\nclass", "\ndef", "\n#", "\nif", "\nprint", "\n@"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A random tiny model with the rows of the test tokenizer (1,038 tokens padded to 1,088)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.ckpt"
    save_model(Phi(PhiConfig.from_name("tiny", vocab_size=1088, block_size=1024)), path)
    return path


def generate_cli(capsys, *argv) -> tuple[int, str]:
    """`python -m evals.generate ARGV` in this process: (exit status, its stderr)."""
    capsys.readouterr()
    try:
        status = main([str(arg) for arg in argv])
    except SystemExit as exit:  # argparse's usage errors
        status = exit.code
    return status, capsys.readouterr().err


def test_generate_then_evaluate_humaneval_through_the_clis(tmp_path, tiny_ckpt, code_tokenizer, run_python, capsys):
    """Both commands as real subprocesses; the refusal and the resume in between run generate in this process."""
    samples = tmp_path / "samples.jsonl"
    common = ["--checkpoint", str(tiny_ckpt), "--tokenizer", str(code_tokenizer)]
    common += ["--benchmark", "humaneval", "--out", str(samples), "--max-new-tokens", "24", "--batch-size", "3"]
    run_python("-m", "evals.generate", *common, "--limit", "2", "--n", "2", "--temperature", "0.8")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [r["task_id"] for r in rows].count("HumanEval/0") == 2 and len(rows) == 4
    assert not any(stop in r["completion"] for r in rows for stop in HUMANEVAL_STOPS)
    status, err = generate_cli(capsys, *common, "--limit", "3")
    assert status == 2 and "--resume" in err
    assert generate_cli(capsys, *common, "--limit", "3", "--n", "2", "--temperature", "0.8", "--resume")[0] == 0
    resumed = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(resumed) == 6 and resumed[:4] == rows and [r["task_id"] for r in resumed[4:]] == ["HumanEval/2"] * 2
    results = tmp_path / "results.jsonl"
    evaluate = ["-m", "evals.evaluate", "--benchmark", "humaneval", "--samples", str(samples), "--out", str(results)]
    out = run_python(*evaluate, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["problems"] == 3 and summary["samples"] == 6 and "pass@1" in summary
    assert summary["sandbox"] in ("bwrap", "unshare")


@pytest.fixture
def generate_args(tmp_path, tiny_ckpt, code_tokenizer):
    out = tmp_path / "samples.jsonl"
    common = ["--checkpoint", tiny_ckpt, "--tokenizer", code_tokenizer, "--benchmark", "humaneval"]
    return out, [*common, "--out", out, "--max-new-tokens", "8"]


def test_resume_ends_a_last_line_that_lost_its_newline_and_cuts_a_torn_one(generate_args, capsys):
    out, args = generate_args
    assert generate_cli(capsys, *args, "--limit", "2")[0] == 0
    first, second = out.read_text().splitlines()
    for damaged, kept in ((first + "\n" + second, 2), (first + "\n" + second[:25], 1)):  # no newline; torn by a kill
        out.write_text(damaged)
        status, err = generate_cli(capsys, *args, "--limit", "3", "--resume")
        assert status == 0, err
        lines = out.read_text().splitlines()
        assert out.read_text().endswith("\n") and lines[:kept] == [first, second][:kept]
        assert sorted(json.loads(line)["task_id"] for line in lines) == [f"HumanEval/{i}" for i in range(3)]
        assert f"wrote {3 - kept} samples" in err


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_a_limit_below_one_is_refused(generate_args, capsys, limit):
    out, args = generate_args
    status, err = generate_cli(capsys, *args, "--limit", limit)
    assert status == 2 and f"--limit must be at least 1, got {limit}" in err and not out.exists()


@pytest.mark.parametrize(
    "rows, message",
    [
        (4160, "4160 embedding rows, 3122 more: it was trained with another tokenizer"),  # the demo model's rows
        (1000, "the tokenizer has 1038 tokens but {ckpt} only 1000 embedding rows"),
    ],
)
def test_a_tokenizer_that_does_not_fit_the_checkpoint_is_refused(tmp_path, generate_args, capsys, rows, message):
    out, args = generate_args
    ckpt = tmp_path / f"rows{rows}.ckpt"
    save_model(Phi(PhiConfig.from_name("tiny", vocab_size=rows)), ckpt)
    status, err = generate_cli(capsys, *args, "--checkpoint", ckpt)
    assert status == 2 and message.format(ckpt=ckpt) in err and not out.exists()


def test_a_fit_checkpoint_is_checked_against_the_tokenizer_its_data_was_built_with(
    tmp_path, code_shards, code_tokenizer, generate_args, capsys
):
    """fit records the shards' tokenizer in its checkpoint: that one passes (even with 3,000 spare rows), another
    is refused."""
    data = PackedDataModule({str(code_shards): 1.0}, seq_len=32, batch_size=2, val_fraction=0.01, num_workers=0)
    module = PhiLitModule(PhiConfig.from_name("tiny", block_size=64))  # 4,096 rows
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    trainer.save_checkpoint(tmp_path / "fit.ckpt")
    assert load_checkpoint(tmp_path / "fit.ckpt")[1] == tokenizer_hash(load_tokenizer(code_tokenizer))
    out, args = generate_args
    assert generate_cli(capsys, *args, "--checkpoint", tmp_path / "fit.ckpt", "--limit", "1")[0] == 0
    other = load_tokenizer(code_tokenizer)
    other.add_tokens(["<extra>"])
    other.save(str(tmp_path / "other.json"))
    status, err = generate_cli(
        capsys, *args, "--checkpoint", tmp_path / "fit.ckpt", "--tokenizer", tmp_path / "other.json", "--overwrite"
    )
    assert status == 2 and "is not the one" in err and "was trained with" in err


def test_a_ckpt_without_a_tokenizer_is_refused(tmp_path, tiny_ckpt, capsys):
    status, err = generate_cli(capsys, "--checkpoint", tiny_ckpt, "--benchmark", "humaneval", "--out", tmp_path / "x")
    assert status == 2 and "--tokenizer is required" in err


def test_callback_grades_during_fit_canonical_solutions_pass_and_wrong_ones_fail(tmp_path, code_tokenizer, monkeypatch):
    """Three problems whose prompt already holds the canonical solution and one whose prompt holds a wrong one, with
    a model that ends every completion at once (its head is biased to EOS): pass@1 must be 3/4. A grader that
    fails, or passes, everything gets 0 or 1."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    humaneval = load_problems("humaneval")[:4]
    rows = []
    for problem, solution in zip(humaneval, [p.reference for p in humaneval[:3]] + ["    return None\n"], strict=True):
        test = problem.test.removesuffix(f"\ncheck({problem.entry_point})")
        rows.append(
            {"task_id": problem.task_id, "prompt": problem.prompt + solution, "test": test}
            | {"entry_point": problem.entry_point, "canonical_solution": ""}
        )
    benchmark = tmp_path / "solved.jsonl"
    benchmark.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = PhiConfig.from_name("tiny", vocab_size=1088, block_size=512)
    eos = eos_id(load_tokenizer(code_tokenizer))
    model = Phi(config)
    with torch.no_grad():
        model.lm_head.bias[eos] = 1e4
    save_model(model, tmp_path / "eos.ckpt")
    callback = PassAtOneCallback(str(code_tokenizer), every_n_steps=2, benchmark=str(benchmark), max_new_tokens=8)
    module = PhiLitModule(config, init_from=str(tmp_path / "eos.ckpt"))
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=L.pytorch.loggers.CSVLogger(tmp_path),
        enable_progress_bar=False,
        enable_checkpointing=False,
        callbacks=[callback],
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=in_memory_batches(seq_len=32))
    assert trainer.logged_metrics["eval/problems_pass@1"] == pytest.approx(0.75)
    assert module.model.training


def test_callback_refuses_a_bad_benchmark_at_setup(tmp_path, code_tokenizer):
    callback = PassAtOneCallback(str(code_tokenizer), benchmark=str(tmp_path / "absent.jsonl"))
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, callbacks=[callback])
    with pytest.raises(ConfigError, match="absent.jsonl"):
        trainer.fit(PhiLitModule(PhiConfig.from_name("tiny")), train_dataloaders=in_memory_batches(seq_len=32))
