import json

import lightning as L
import pytest
import torch
from test_module import in_memory_batches

from evals.callback import PassAtOneCallback
from evals.problems import load_problems
from phi1.checkpoint import save_model
from phi1.model import Phi, PhiConfig
from phi1.module import PhiLitModule
from phi1.tokenizer import eos_id, load_tokenizer

HUMANEVAL_STOPS = ["\nclass", "\ndef", "\n#", "\nif", "\nprint", "\n@"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.ckpt"
    save_model(Phi(PhiConfig.from_name("tiny", block_size=1024)), path)
    return path


def test_generate_then_evaluate_humaneval_through_the_clis(tmp_path, tiny_ckpt, code_tokenizer, run_python):
    samples = tmp_path / "samples.jsonl"
    common = [
        "-m",
        "evals.generate",
        "--checkpoint",
        str(tiny_ckpt),
        "--tokenizer",
        str(code_tokenizer),
        "--benchmark",
        "humaneval",
        "--out",
        str(samples),
        "--max-new-tokens",
        "24",
        "--batch-size",
        "3",
    ]
    run_python(*common, "--limit", "2", "--n", "2", "--temperature", "0.8")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [r["task_id"] for r in rows].count("HumanEval/0") == 2 and len(rows) == 4
    assert not any(stop in r["completion"] for r in rows for stop in HUMANEVAL_STOPS)
    refused = run_python(*common, "--limit", "3", check=False)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    run_python(*common, "--limit", "3", "--n", "2", "--temperature", "0.8", "--resume")
    resumed = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(resumed) == 6 and resumed[:4] == rows and [r["task_id"] for r in resumed[4:]] == ["HumanEval/2"] * 2
    results = tmp_path / "results.jsonl"
    out = run_python(
        "-m", "evals.evaluate", "--benchmark", "humaneval", "--samples", str(samples), "--out", str(results)
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["problems"] == 3 and summary["samples"] == 6 and "pass@1" in summary
    assert summary["sandbox"] in ("bwrap", "unshare")
    no_tokenizer = run_python(
        "-m",
        "evals.generate",
        "--checkpoint",
        str(tiny_ckpt),
        "--benchmark",
        "humaneval",
        "--out",
        str(tmp_path / "x.jsonl"),
        check=False,
    )
    assert no_tokenizer.returncode == 2 and "--tokenizer" in no_tokenizer.stderr


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
    with pytest.raises(ValueError, match="absent.jsonl"):
        trainer.fit(PhiLitModule(PhiConfig.from_name("tiny")), train_dataloaders=in_memory_batches(seq_len=32))
