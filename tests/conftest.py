import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# One CPU thread per torch process, this one and the ones the tests start (they inherit it), unless the caller set
# another: the tests' models are tiny, and a second thread spinning against loader workers, DDP ranks and sandboxed
# programs on a 2-core machine made a 12-step fit 5-20x slower. torch reads it as it loads, before any test imports it.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def openai_server():
    """A fault-injecting OpenAI-compatible server on 127.0.0.1 (tests/openai_server.py), stopped after the test;
    set its `reply`, `latency` ... and `inject` faults from the test."""
    from openai_server import OpenAIServer

    with OpenAIServer() as server:
        yield server


@pytest.fixture
def run_python():
    """Run `python ARGS...` from the repo root as a real subprocess; returns the CompletedProcess."""

    def run(*args, check=True, env=None, timeout=600, cwd=REPO):
        out = subprocess.run(
            [sys.executable, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
        if check and out.returncode != 0:
            raise AssertionError(f"python {' '.join(args)} exited {out.returncode}\n{out.stdout}\n{out.stderr}")
        return out

    return run


def stdlib_sources(limit: int) -> list[Path]:
    """The first `limit` (sorted) modules of the running interpreter's standard library: a real code corpus
    every machine has."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.glob("*.py"))[:limit]


@pytest.fixture(scope="session")
def code_tokenizer(tmp_path_factory) -> Path:
    """A codegen-style tokenizer (1,000 BPE tokens + 38 whitespace tokens) trained on stdlib sources."""
    from data_prep.train_tokenizer import save_tokenizer, train_tokenizer

    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    texts = (p.read_text(encoding="utf-8", errors="replace") for p in stdlib_sources(60))
    save_tokenizer(train_tokenizer(texts, vocab_size=1000, show_progress=False), path)
    return path


@pytest.fixture(scope="session")
def code_shards(tmp_path_factory, code_tokenizer) -> Path:
    """Shards of 60 stdlib modules (about 500k tokens), built by the real builder."""
    from data_prep.build_shards import build_shards

    out = tmp_path_factory.mktemp("shards") / "code"
    build_shards(code_tokenizer, out, stdlib_sources(60), shard_tokens=200_000)
    return out


@pytest.hookimpl(trylast=True)  # after `-m "not slurm"` has deselected them: no `sinfo` to wait for then
def pytest_collection_modifyitems(config, items):
    """Tests marked `slurm` run only where a SLURM cluster answers `sinfo` (`make test-slurm` starts a local one)."""
    marked = [item for item in items if "slurm" in item.keywords]
    if not marked:
        return
    try:
        answers = subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        answers = False
    if not answers:
        skip = pytest.mark.skip(reason="no SLURM cluster answers `sinfo` (make test-slurm starts a local one)")
        for item in marked:
            item.add_marker(skip)
