import pytest
import torch

from phi1.schedule import WarmupDecayLR


def lrs(steps, **kwargs):
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = WarmupDecayLR(optimizer, **kwargs)
    values = []
    for _ in range(steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_phi1_pretraining_schedule_at_chosen_steps():
    lr = lrs(36_001, warmup_steps=750, total_steps=36_000)
    assert lr[0] == 0.0
    assert lr[375] == pytest.approx(0.5e-3)
    assert lr[750] == pytest.approx(1e-3)
    assert lr[750 + (36_000 - 750) // 2] == pytest.approx(0.5e-3, rel=1e-4)
    assert lr[24_000] == pytest.approx(1e-3 * 12_000 / 35_250)
    assert lr[36_000] == 0.0


def test_cosine_decay_to_a_floor():
    lr = lrs(120, warmup_steps=10, total_steps=110, min_lr_ratio=0.1, decay="cosine")
    assert lr[10] == pytest.approx(1e-3)
    assert lr[60] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert lr[110] == pytest.approx(1e-4) and lr[119] == pytest.approx(1e-4)


def test_bad_schedule_arguments_are_refused():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="decay"):
        WarmupDecayLR(optimizer, 10, 1, decay="step")
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupDecayLR(optimizer, 10, 20)
