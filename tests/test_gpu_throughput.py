import pytest

from phi1.model import Phi, PhiConfig


def test_the_gpu_bench_runs_its_training_step_on_the_cpu_and_prints_the_table(repo_root, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(repo_root / "bench"))
    import gpu_throughput

    gpu_throughput.main(["--smoke", "--compile", "eager", "--loss-chunk-size", "32"])
    header, rule, row = capsys.readouterr().out.strip().splitlines()[-3:]
    assert header.startswith("| model | attention | mode | micro-batch | tokens/s/GPU | MFU |")
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["tiny", "sdpa", "eager", "4+"]  # the search reached --max-batch (4 in smoke mode)
    tokens_per_s, mfu = float(cells[4].replace(",", "")), float(cells[5].rstrip("%")) / 100
    flops = Phi(PhiConfig(preset="tiny", block_size=64)).flops_per_token(64)
    assert tokens_per_s > 0 and mfu == pytest.approx(tokens_per_s * flops / 1e12, abs=6e-4)  # nominal 1e12 peak
