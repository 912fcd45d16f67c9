import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    return REPO


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
