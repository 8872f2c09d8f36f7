"""The grid barrier of the persistent kernels, exercised for real: on the CPU the interpreter's programs run in
threads (``concurrent_interpreter``), on a GPU as one cooperative launch.

What is checked: with the barrier, results equal the oracles even when programs are delayed at random at every
atomic; without it (a barrier broken on purpose, programs of the other slices slowed down) they do not, so the
first check has teeth; the counters end at ``programs x barriers``; a program that never arrives makes the
launch fail with a RuntimeError that says what happened, instead of hanging.
"""

from __future__ import annotations

import pytest
import torch
from concurrent_interpreter import concurrent_programs, forward_with_a_missing_program, interpreter
from helpers import ON_GPU, assert_close, grads, layer_tensors
from tritongru.kernels.grid_sync import POISON

import tritongru
import tritongru.launchers
from tritongru import reference
from tritongru.configs import KernelConfig
from tritongru.variants import VARIANTS

# H=40 in slices of 16: three programs per batch block, the last owning 8 units; B=20: two batch blocks.
T, B, I, H = 6, 20, 5, 40
SLICES = 3
GRID_SYNC = KernelConfig(block_b=16, block_h=16, block_k=32, num_warps=2, persistent=True, split_k=True)


@pytest.fixture
def grid_sync_config(monkeypatch) -> list[tuple[list[int], int]]:
    """Force the grid-synchronised config; return the ``(counters, expected)`` of every barrier check."""
    checks = []
    real_check = tritongru.launchers._check_barriers

    def recording_check(sync, expected):
        checks.append((sync.tolist(), expected))
        real_check(sync, expected)

    monkeypatch.setattr(tritongru.launchers, "select_config", lambda kernel, **_: GRID_SYNC)
    monkeypatch.setattr(tritongru.launchers, "_check_barriers", recording_check)
    return checks


@pytest.fixture
def broken_barrier(monkeypatch) -> None:
    """Break the barrier on purpose: every poll of a counter through the interpreter's atomics is answered
    'everyone has arrived', so no program ever waits."""
    builder_type = type(interpreter.interpreter_builder)
    real_rmw = builder_type.create_atomic_rmw

    def no_wait(self, op, ptr, val, *args):
        result = real_rmw(self, op, ptr, val, *args)
        if (val.data == 0).all():  # a poll adds 0; an arrival adds 1
            result.data[:] = POISON - 1
        return result

    monkeypatch.setattr(builder_type, "create_atomic_rmw", no_wait)


def layer_and_oracle(variant: str, device: torch.device):
    """``(ours, expected)``: output, h_n and every gradient of one layer, through tritongru and the oracle."""
    tensors = layer_tensors(T, B, I, H, device)
    tensors = [t.requires_grad_() for t in tensors]
    lengths = torch.randint(1, T + 1, (B,), device=device)
    output, h_n = tritongru.gru_layer(*tensors, variant=variant, lengths=lengths)
    expected_out, expected_h = reference.gru_layer_ref(*tensors, variant=variant, lengths=lengths)
    ours = [output, h_n, *grads([output, h_n], tensors)]
    expected = [expected_out, expected_h, *grads([expected_out, expected_h], tensors)]
    return ours, expected


@pytest.mark.parametrize("variant", VARIANTS)
def test_barrier_holds_under_random_delays(variant, grid_sync_config, monkeypatch, device):
    """Forward and backward through grid barriers, programs delayed at random at every atomic operation."""
    with concurrent_programs(monkeypatch, delay=2e-3, store_delay=0 if ON_GPU else 1e-3):
        ours, expected = layer_and_oracle(variant, device)
    names = ["output", "h_n", "d input", "d h0", "d weight_ih", "d weight_hh", "d bias_ih", "d bias_hh"]
    for name, actual, wanted in zip(names, ours, expected, strict=True):
        assert_close(actual, wanted, torch.float32, name)
    barriers_per_step = 2 if variant == "classic" else 1
    # one forward and one backward launch, each with a counter per batch block
    assert [expected for _, expected in grid_sync_config] == [SLICES * barriers_per_step * T] * 2
    assert all(counts == [expected, expected] for counts, expected in grid_sync_config)


@pytest.mark.skipif(ON_GPU, reason="breaks the barrier through the CPU interpreter's atomics")
def test_broken_barrier_gives_wrong_results(grid_sync_config, broken_barrier, monkeypatch, device):
    """The check above has teeth: with every poll answered 'everyone has arrived' and the programs of the other
    slices slowed down, the first slice reads ``h`` before it is written and the output is wrong. The delay of
    each store (50 ms) is well above what one interpreted step of the first slice takes, so that slice runs
    ahead by whole steps (at 5 ms it did not always: a slow step let the others catch up)."""
    with concurrent_programs(monkeypatch, store_delay=5e-2):
        (output, *_), (expected, *_) = layer_and_oracle("cudnn", device)
    assert not torch.allclose(output.nan_to_num(1e9), expected, atol=1e-3)


@pytest.mark.skipif(ON_GPU, reason="leaves a program out of the launch through the CPU interpreter")
@pytest.mark.parametrize("variant", VARIANTS)
def test_missing_program_times_out_with_an_error(variant, grid_sync_config, monkeypatch, device):
    """A program that never runs (a grid not all resident) makes the others time out, not hang: the launch
    ends and the host raises, saying what happened and how to fall back."""
    forward_with_a_missing_program(monkeypatch, variant, T, B, H, device)
    ((counters, expected),) = grid_sync_config
    assert counters[0] == expected and counters[1] >= POISON, "only the incomplete batch block times out"


def test_counters_are_checked():
    """The host check itself: a poisoned counter is a timeout, a miscount an internal error, and exactly the
    expected count passes."""
    tritongru.launchers._check_barriers(torch.tensor([12, 12], dtype=torch.int32), 12)
    with pytest.raises(RuntimeError, match="timed out"):
        tritongru.launchers._check_barriers(torch.tensor([12, POISON + 3], dtype=torch.int32), 12)
    with pytest.raises(RuntimeError, match="internal error"):
        tritongru.launchers._check_barriers(torch.tensor([12, 11], dtype=torch.int32), 12)


@pytest.mark.skipif(not ON_GPU, reason="on the CPU the counters are checked at once (the test above)")
def test_gpu_counters_are_checked_without_waiting(device):
    """On a GPU the host does not wait for a launch to read its counters: a poisoned counter is reported by
    the next check of finished launches, and each launch is reported once."""
    tritongru.launchers._check_barriers(torch.tensor([POISON], dtype=torch.int32, device=device), 1)
    with pytest.raises(RuntimeError, match="timed out"):
        tritongru.check_grid_barriers()
    tritongru.check_grid_barriers()


@pytest.mark.parametrize("programs", [2, 5])
def test_barrier_stress_kernel_sees_no_stale_tag(programs, monkeypatch, device):
    """The barrier alone: programs delayed at random at every step never read another's stale step tag."""
    with concurrent_programs(monkeypatch):
        assert tritongru.launchers.stress_barrier(programs, steps=12, max_delay_ns=40, device=device) == 0


@pytest.mark.skipif(ON_GPU, reason="breaks the barrier through the CPU interpreter's atomics")
def test_barrier_stress_kernel_counts_stale_tags_without_a_barrier(broken_barrier, monkeypatch, device):
    """The stress kernel has teeth: with every poll answered 'everyone has arrived', programs run ahead and
    see tags of other steps."""
    with concurrent_programs(monkeypatch):
        assert tritongru.launchers.stress_barrier(4, steps=12, max_delay_ns=200, device=device) > 0


def test_counts_that_could_reach_the_poison_run_per_step(grid_sync_config, monkeypatch, device):
    """A sequence so long that the counters could reach the poison value (millions of steps) runs per step
    instead of being misread as a timeout: here the poison is lowered to what this layer's counters reach."""
    monkeypatch.setattr(tritongru.launchers, "POISON", SLICES * T)
    with concurrent_programs(monkeypatch):
        ours, expected = layer_and_oracle("cudnn", device)
    assert grid_sync_config == [], "no grid-synchronised launch"
    for actual, wanted in zip(ours, expected, strict=True):
        assert_close(actual, wanted, torch.float32)
