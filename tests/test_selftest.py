"""The proof command's parts that mean something on the CPU: the layer stress check and its oracle, the
speed-up table against the targets, and the refusal to "prove" anything without a GPU."""

from __future__ import annotations

import pytest
from helpers import ON_GPU

import tritongru
from tritongru.harness import selftest
from tritongru.variants import VARIANTS


@pytest.mark.parametrize("variant", VARIANTS)
def test_layer_stress_agrees_with_its_oracle(variant, device):
    assert selftest.layer_stress(variant, batch=3, hidden=17, steps=5, device=device) is None


def test_layer_stress_reports_a_wrong_layer(monkeypatch, device):
    real = tritongru.gru_layer
    monkeypatch.setattr(tritongru, "gru_layer", lambda *args, **kwargs: [t * 1.01 for t in real(*args, **kwargs)])
    problem = selftest.layer_stress("cudnn", batch=3, hidden=17, steps=5, device=device)
    assert problem is not None and "output off by" in problem


def _row(mode: str, batch: int, hidden: int, speedup: float, us_per_step: float) -> dict:
    return dict(
        provider="tritongru-cudnn",
        status="ok",
        mode=mode,
        dtype="bf16",
        batch=batch,
        hidden=hidden,
        seq_len=1024,
        speedup_vs_baseline=speedup,
        us_per_step=us_per_step,
    )


def test_speedup_table_shows_misses_first():
    document = {
        "rows": [
            _row("forward", 16, 768, 2.5, 1.2),
            _row("forward", 64, 1024, 1.4, 3.0),
            _row("train", 16, 768, 1.6, 4.0),
            {**_row("forward", 1, 256, 9.0, 0.1), "provider": "cudnn"},
        ]
    }
    lines = selftest.speedup_table(document)
    forward = [line for line in lines[1:] if line.startswith("forward ")]
    assert "MISSED" in forward[0] and "1024" in forward[0], "the worst forward point comes first"
    assert "met" in forward[1] and "768" in forward[1]
    assert any(line.startswith("train") and "met" in line for line in lines)
    assert lines[-1] == "forward bf16 B=16 H=768: 1.20 us/step (target 1.5): met"
    assert not any(" 256 " in line for line in lines), "only the cudnn form's rows are compared"


@pytest.mark.skipif(ON_GPU, reason="on a GPU the selftest runs for real")
def test_selftest_refuses_without_a_gpu(tmp_path, capsys):
    assert selftest.run_selftest(tmp_path, tmp_path) == 2
    assert "no CUDA device" in capsys.readouterr().out
