"""The tagged exchange (``TRITONGRU_EXCHANGE=tagged``): the grid-synchronised forward waits for the data itself.

What is checked: with it, the forward (both forms, 2- and 4-byte words) equals the oracles while the programs of
every slice but the first are slowed down, and its counters stay at 0; without the wait (its polls answered at
once) the first slice reads stale words and the output is wrong, so the first check has teeth; a program that
never runs makes the others time out with an error instead of hanging; where the exchange does not apply
(backward, cell, float64) the counter is kept; a bad ``TRITONGRU_EXCHANGE`` is refused; ``using_exchange``
overrides the environment in its block and thread, and the bench's tagged contender trains with a tagged forward
and the counter's backward.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
import torch
import triton
import triton.language as tl
import tritongru.kernels.gru_math
from concurrent_interpreter import concurrent_programs, forward_with_a_missing_program
from helpers import ON_GPU, assert_close, layer_tensors
from tritongru.kernels.grid_sync import POISON

import tritongru.launchers
from tritongru import reference
from tritongru.configs import KernelConfig
from tritongru.harness import providers
from tritongru.variants import VARIANTS

# H=40 in slices of 16: three programs per batch block, the last owning 8 units; B=20: two batch blocks, the
# second of 4 rows; K in two chunks of 32, the second half padding.
T, B, I, H = 4, 20, 5, 40
GRID_SYNC = KernelConfig(block_b=16, block_h=16, block_k=32, num_warps=2, persistent=True, split_k=True)


@pytest.fixture
def recorded_calls(monkeypatch) -> list[dict]:
    """Launch with the grid-synchronised config; return every kernel call made."""
    monkeypatch.setattr(tritongru.launchers, "select_config", lambda kernel, **_: GRID_SYNC)
    calls = []
    real_calls = tritongru.launchers.kernel_calls

    def recording_calls(*args, **kwargs):
        made = real_calls(*args, **kwargs)
        calls.extend(made)
        return made

    monkeypatch.setattr(tritongru.launchers, "kernel_calls", recording_calls)
    return calls


@pytest.fixture
def tagged(recorded_calls, monkeypatch) -> list[dict]:
    """Ask for the tagged exchange on the grid-synchronised config; return every kernel call made."""
    monkeypatch.setenv("TRITONGRU_EXCHANGE", "tagged")
    return recorded_calls


def forward_and_oracle(variant: str, dtype: torch.dtype, device: torch.device):
    """``(ours, expected)``: a layer's output and ``h_n`` through tritongru and the oracle (float64)."""
    tensors = layer_tensors(T, B, I, H, device)
    tensors = [t.to(dtype) for t in tensors]
    lengths = torch.randint(1, T + 1, (B,), device=device)
    with torch.no_grad():
        ours = tritongru.gru_layer(*tensors, variant=variant, lengths=lengths)
        expected = reference.gru_layer_ref(*[t.double() for t in tensors], variant=variant, lengths=lengths)
    return ours, expected


@pytest.mark.skipif(ON_GPU, reason="slows programs down through the CPU interpreter")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("variant", VARIANTS)
def test_tagged_forward_matches_the_oracle(variant, dtype, tagged, monkeypatch, device):
    """Every slice but the first stores slowly, so the first runs ahead and must wait for their words."""
    with concurrent_programs(monkeypatch, store_delay=2e-3):
        (output, h_n), (expected_out, expected_h) = forward_and_oracle(variant, dtype, device)
    assert_close(output, expected_out, dtype, "output")
    assert_close(h_n, expected_h, dtype, "h_n")
    (call,) = [call for call in tagged if call.get("TAGGED")]
    words = torch.int32 if dtype.itemsize == 2 else torch.int64
    assert call["xh_ptr"].dtype == words and call["xh_ptr"].shape == (2, B, H)
    assert (call["xrh_ptr"] is not None) == (variant == "classic")
    assert call["sync_ptr"].tolist() == [0, 0]  # no arrival at the counter, no timeout


@triton.jit
def _no_wait(p, mask, words, tag, value_dtype: tl.constexpr, sync_ptr, i_group, spin_limit):
    """A broken wait: the first poll's words, whatever their tags."""
    if words.dtype.primitive_bitwidth == 32:
        return words.to(tl.int16).to(value_dtype, bitcast=True)
    else:
        return words.to(tl.int32).to(value_dtype, bitcast=True)


@pytest.mark.skipif(ON_GPU, reason="breaks the wait through the CPU interpreter")
def test_without_the_wait_the_output_is_wrong(tagged, monkeypatch, device):
    """The check above has teeth: with the polls answered at once, the first slice, run ahead by whole steps
    (every other slice's store delayed 50 ms), multiplies stale or empty words."""
    monkeypatch.setattr(tritongru.kernels.gru_math, "wait_for_tag", _no_wait)
    with concurrent_programs(monkeypatch, store_delay=5e-2):
        (output, _), (expected, _) = forward_and_oracle("cudnn", torch.float32, device)
    assert any(call.get("TAGGED") for call in tagged)
    assert not torch.allclose(output.double().nan_to_num(1e9), expected, atol=1e-3)


@pytest.mark.skipif(ON_GPU, reason="leaves a program out of the launch through the CPU interpreter")
@pytest.mark.parametrize("variant", VARIANTS)
def test_missing_program_times_out_with_an_error(variant, tagged, monkeypatch, device):
    """A program that never runs leaves its words untagged: the others time out, poison the counter, and the
    host raises, as with the counter."""
    forward_with_a_missing_program(monkeypatch, variant, T, B, H, device)
    (call,) = tagged
    assert call["TAGGED"]
    counters = call["sync_ptr"].tolist()
    assert counters[0] == 0 and counters[1] >= POISON  # only the group of the missing program waited in vain


def _args(kind: str, dtype: torch.dtype, config: KernelConfig = GRID_SYNC) -> dict:
    flags = {"bias": True, "lengths": False} | ({"store_gates": False} if kind != "backward" else {})
    precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float64: "fp64"}[dtype]
    return tritongru.launchers.meta_arguments(kind, "cudnn", precision, B, H, I, flags, config)[1]


@pytest.mark.parametrize(
    ("kind", "kernel", "dtype", "config", "tags"),
    [
        ("forward", "forward", torch.float32, GRID_SYNC, True),
        ("forward", "forward", torch.bfloat16, GRID_SYNC, True),
        ("forward", "forward", torch.float64, GRID_SYNC, False),
        ("forward", "cell", torch.float32, GRID_SYNC, False),
        ("backward", "backward", torch.float32, GRID_SYNC, False),
        ("forward", "forward", torch.float32, KernelConfig(16, 16, 32, 2, split_k=True, streamed_chunks=1), False),
    ],
)
def test_where_the_tagged_exchange_applies(kind, kernel, dtype, config, tags, monkeypatch):
    """Only the sequence forward of 2- and 4-byte values with every weight held takes it; the rest keep the
    counter."""
    monkeypatch.setenv("TRITONGRU_EXCHANGE", "tagged")
    assert tritongru.launchers.tags_exchange(kind, _args(kernel, dtype, config)) == tags
    monkeypatch.setenv("TRITONGRU_EXCHANGE", "counter")
    assert not tritongru.launchers.tags_exchange(kind, _args(kernel, dtype, config))


def test_a_bad_exchange_is_refused(monkeypatch):
    monkeypatch.setenv("TRITONGRU_EXCHANGE", "polled")
    with pytest.raises(ValueError, match=r"TRITONGRU_EXCHANGE must be one of \('counter', 'tagged'\); got 'polled'"):
        tritongru.launchers.exchange()
    refused = pytest.raises(ValueError, match=r"exchange must be one of \('counter', 'tagged'\); got 'polled'")
    with refused, tritongru.launchers.using_exchange("polled"):
        pass


def test_using_exchange_overrides_the_environment_in_its_block_and_thread(monkeypatch):
    launchers = tritongru.launchers
    monkeypatch.setenv("TRITONGRU_EXCHANGE", "tagged")
    seen = []
    with launchers.using_exchange("counter"):
        assert launchers.exchange() == "counter"
        with launchers.using_exchange("tagged"):
            assert launchers.exchange() == "tagged"
        assert launchers.exchange() == "counter"
        elsewhere = threading.Thread(target=lambda: seen.append(launchers.exchange()))
        elsewhere.start()
        elsewhere.join()
    assert launchers.exchange() == "tagged" and seen == ["tagged"]


@pytest.mark.skipif(ON_GPU, reason="runs a grid-synchronised config through the CPU interpreter")
def test_the_tagged_contender_trains_with_a_tagged_forward_and_a_counter_backward(recorded_calls, monkeypatch):
    """The bench's ``tritongru-cudnn-tagged``, the environment asking for the counter: its forward launches with
    the tagged exchange, the backward autograd runs after it with the counter, and both agree with
    ``torch.nn.GRU``."""
    monkeypatch.setenv("TRITONGRU_EXCHANGE", "counter")
    base = torch.nn.GRU(I, H)
    model, formulation = providers.build("tritongru-cudnn-tagged", base, allow_tf32=False)
    x, h0 = torch.randn(T, B, I, requires_grad=True), torch.randn(1, B, H)
    with concurrent_programs(monkeypatch, store_delay=1e-3):
        output, h_n = model(x, h0)
        ours = torch.autograd.grad(output.sum() + h_n.sum(), [x, *model.parameters()])
    expected_out, expected_h = base(x, h0)
    expected = torch.autograd.grad(expected_out.sum() + expected_h.sum(), [x, *base.parameters()])
    assert formulation == "cudnn"
    assert [name for name, _ in model.named_parameters()] == [f"model.{name}" for name, _ in base.named_parameters()]
    for name, actual, wanted in zip(["output", "h_n"], [output, h_n], [expected_out, expected_h], strict=True):
        assert_close(actual, wanted, torch.float32, name)
    for name, actual, wanted in zip(["x", *(n for n, _ in base.named_parameters())], ours, expected, strict=True):
        assert_close(actual, wanted, torch.float32, f"d {name}")
    forward, backward = recorded_calls
    assert forward["TAGGED"] and forward["sync_ptr"].tolist() == [0, 0]
    assert "TAGGED" not in backward and backward["GRID_SYNC"] and min(backward["sync_ptr"].tolist()) > 0


TAGGED_FACTS = """
import json, sys
from tritongru.compile_check import Call, compile_call
from tritongru.compiled import planned_step, step_facts
from tritongru.precisions import PRECISIONS

variant = sys.argv[1]
for point in sys.argv[2:]:
    precision, batch, hidden = point.split(":")
    flags = (("bias", True), ("lengths", False), ("store_gates", True))
    config, (first, *_) = compile_call(Call("forward", variant, precision, int(batch), int(hidden), flags), 90)
    ptx, p = first.resources.ptx, PRECISIONS[precision]
    print(json.dumps({
        "point": point, "mode": first.mode, "spills": first.resources.spills,
        "found": step_facts(ptx).__dict__,
        "planned": planned_step("forward", variant, config, int(hidden), p.dtype).__dict__,
        "polls": "ld.volatile.global" in ptx, "publishes": "st.relaxed.gpu.global" in ptx,
        "arrives": "release.add" in ptx,
    }))
"""

TAGGED_POINTS = ["bf16:16:768", "bf16:64:256", "bf16:64:1024", "bf16:512:512", "tf32:16:768", "tf32:64:1024"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_tagged_step_is_one_round_trip_per_phase_without_a_counter(variant):
    """The forward the launchers take with the tagged exchange (the first config that compiles without spilling),
    compiled for sm_90: grid-synchronised, no arrival at a counter, its exchange read by volatile polls and
    written by relaxed stores, one round trip per phase and batch block as planned (its retry loops aside), the
    warps' share of the ``mma`` as planned."""
    import json

    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITONGRU_EXCHANGE"] = "tagged"
    done = subprocess.run(
        [sys.executable, "-c", TAGGED_FACTS, variant, *TAGGED_POINTS], env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [report["point"] for report in reports] == TAGGED_POINTS
    for report in reports:
        where = report["point"]
        assert report["mode"] == "grid-sync" and report["spills"] == 0, where
        assert report["polls"] and report["publishes"], where
        assert not report["arrives"] and report["found"]["arrivals"] == 0, where
        assert report["found"] == report["planned"] | {"arrivals": 0}, where
