"""The kernels against their oracles: forward and every gradient, both formulations, every launch mode, odd
sizes, ragged slices and batch blocks, every dtype, variable lengths, NaN-poisoned outputs and bitwise
reproducibility. Oracles: ``torch.nn.GRU``/``GRUCell`` (cudnn) and ``tritongru.reference`` (classic)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from concurrent_interpreter import concurrent_programs
from helpers import ON_GPU, assert_close, grads

import tritongru
import tritongru.launchers
from tritongru import reference
from tritongru.configs import KernelConfig
from tritongru.precisions import PRECISIONS
from tritongru.variants import VARIANTS

SHAPES = [
    pytest.param(1, 1, 7, 17, id="T1-B1-I7-H17"),
    pytest.param(5, 3, 7, 17, id="T5-B3-I7-H17"),
    pytest.param(4, 2, 9, 33, id="T4-B2-I9-H33"),
    pytest.param(3, 17, 5, 16, id="T3-B17-I5-H16"),
    pytest.param(6, 1, 1, 3, id="T6-B1-I1-H3"),
]

LAUNCH_MODES = {
    # one program owns the whole hidden width of its rows (every H here is <= 64), its 4 warps splitting K:
    # CTA barriers only
    "one-slice": KernelConfig(block_b=16, block_h=64, block_k=64, persistent=True, split_k=True),
    # slices of 16 units (H=33: three, the last ragged) meeting at a grid barrier every phase, each program
    # stepping two batch blocks (B=17: both in one program), 2 warps splitting K in chunks of 32 (H=33: two, the
    # last ragged), the last chunk of the weights streamed every step (H=33: one held, one streamed; H <= 32:
    # none held); on the CPU the interpreter's programs run in threads for it
    "grid-sync": KernelConfig(
        block_b=16,
        block_h=16,
        block_k=32,
        num_warps=2,
        persistent=True,
        split_k=True,
        batch_blocks=2,
        streamed_chunks=1,
    ),
    # the same slices, one launch per step and phase, one warp owning the rows, K in chunks of 16
    "per-step": KernelConfig(block_b=16, block_h=16, block_k=16, num_warps=1, persistent=False),
}
"""Small tiles: B=17 spans two batch blocks, H=33 three slices, and every reduction several K chunks; the warps
split K (a batched product and a cross-warp sum) or the rows (one warp)."""


@pytest.fixture(params=list(LAUNCH_MODES))
def launch_mode(request, monkeypatch):
    """Force every launcher onto one config of the given launch mode."""
    config = LAUNCH_MODES[request.param]
    monkeypatch.setattr(tritongru.launchers, "select_config", lambda kernel, **_: config)
    if request.param == "grid-sync" and not ON_GPU:
        with concurrent_programs(monkeypatch):
            yield request.param
    else:
        yield request.param


def random_layer(T, B, I, H, device, dtype=torch.float32, bias=True):
    """Input, h0 and one layer's weights, drawn fresh, all requiring grad."""
    scale = H**-0.5
    tensors = [
        torch.randn(T, B, I),
        torch.randn(B, H) * 0.5,
        torch.empty(3 * H, I).uniform_(-scale, scale),
        torch.empty(3 * H, H).uniform_(-scale, scale),
    ]
    if bias:
        tensors += [torch.empty(3 * H).uniform_(-scale, scale), torch.empty(3 * H).uniform_(-scale, scale)]
    else:
        tensors += [None, None]
    return [t.to(device=device, dtype=dtype).requires_grad_() if t is not None else None for t in tensors]


def oracle_layer(variant, x, h0, w_ih, w_hh, b_ih, b_hh, lengths=None):
    """cudnn: torch.nn.GRU with these weights (packed when lengths are given); classic: the reference."""
    if variant == "classic":
        return reference.gru_layer_ref(x, h0, w_ih, w_hh, b_ih, b_hh, variant="classic", lengths=lengths)
    module = torch.nn.GRU(x.shape[-1], w_hh.shape[1], bias=b_ih is not None, device=x.device, dtype=x.dtype)
    params = {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}
    output, h_n = torch.func.functional_call(
        module, {k: v for k, v in params.items() if v is not None}, (_maybe_pack(x, lengths), h0[None])
    )
    if lengths is not None:
        output, _ = torch.nn.utils.rnn.pad_packed_sequence(output, total_length=x.shape[0])
    return output, h_n[0]


def _maybe_pack(x, lengths):
    if lengths is None:
        return x
    return torch.nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)


LAYER_ARGUMENTS = ["input", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"]


def check_layer(
    variant, T, B, I, H, device, dtype=torch.float32, bias=True, lengths=None, oracle_dtype=None, with_h0=True
):
    """tritongru.gru_layer against the oracle: output, h_n and the gradient of every tensor argument."""
    tensors = random_layer(T, B, I, H, device, dtype, bias)
    oracle_tensors = [t.detach().to(oracle_dtype or dtype).requires_grad_() if t is not None else None for t in tensors]
    if not with_h0:
        tensors[1] = None
        oracle_tensors[1] = torch.zeros(B, H, device=device, dtype=oracle_dtype or dtype)
    names = [f"d {name}" for name, t in zip(LAYER_ARGUMENTS, tensors, strict=True) if t is not None]
    leaves = [t for t in tensors if t is not None]
    output, h_n = tritongru.gru_layer(*tensors, variant=variant, lengths=lengths)
    ours = [output, h_n, *grads([output, h_n], leaves)]
    oracle_leaves = [o for t, o in zip(tensors, oracle_tensors, strict=True) if t is not None]
    expected_out, expected_h = oracle_layer(variant, *oracle_tensors, lengths=lengths)
    expected = [expected_out, expected_h, *grads([expected_out, expected_h], oracle_leaves)]
    for name, actual, wanted in zip(["output", "h_n", *names], ours, expected, strict=True):
        assert actual.dtype == dtype, name
        assert_close(actual, wanted, dtype, name)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("T, B, I, H", SHAPES)
def test_layer_forward_and_gradients(variant, T, B, I, H, launch_mode, device):
    check_layer(variant, T, B, I, H, device)


@pytest.mark.parametrize("variant", VARIANTS)
def test_layer_without_bias(variant, launch_mode, device):
    check_layer(variant, 4, 3, 5, 33, device, bias=False)


@pytest.mark.parametrize("variant", VARIANTS)
def test_layer_without_h0(variant, launch_mode, device):
    """``h0=None`` starts from zeros."""
    check_layer(variant, 4, 3, 5, 33, device, with_h0=False)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("lengths", [pytest.param([5, 2, 4], id="unsorted"), pytest.param([1, 1, 1], id="all-one")])
def test_layer_variable_lengths(variant, lengths, launch_mode, device):
    check_layer(variant, 5, 3, 4, 17, device, lengths=torch.tensor(lengths, device=device))


WIDE_BLOCKS = KernelConfig(
    block_b=32, block_h=16, block_k=32, num_warps=2, persistent=True, split_k=True, batch_blocks=2
)
"""Blocks of 32 rows, the heuristic's where a program would step blocks of 16 twice or more (bf16, B=64 H=1024 on
an H100), here each program stepping two of them (B=41: the second ragged) in three slices at a grid barrier."""


@pytest.mark.parametrize("variant", VARIANTS)
def test_layer_in_wide_batch_blocks_stepped_in_turn(variant, monkeypatch, device):
    monkeypatch.setattr(tritongru.launchers, "select_config", lambda kernel, **_: WIDE_BLOCKS)
    lengths = torch.randint(1, 5, (41,), device=device)
    with contextlib.ExitStack() as stack:
        if not ON_GPU:
            stack.enter_context(concurrent_programs(monkeypatch))
        check_layer(variant, 4, 41, 7, 33, device, lengths=lengths)


@pytest.mark.parametrize("variant", VARIANTS)
def test_reverse_direction_within_lengths(variant, device):
    """``reverse=True`` runs each sequence backwards inside its own length."""
    x, h0, w_ih, w_hh, b_ih, b_hh = random_layer(5, 3, 4, 17, device)
    lengths = torch.tensor([3, 5, 1], device=device)
    output, h_n = tritongru.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, variant=variant, lengths=lengths, reverse=True)
    expected_out, expected_h = reference.gru_layer_ref(
        x, h0, w_ih, w_hh, b_ih, b_hh, variant=variant, lengths=lengths, reverse=True
    )
    assert_close(output, expected_out, torch.float32, "output")
    assert_close(h_n, expected_h, torch.float32, "h_n")
    assert torch.all(output[3:, 0] == 0) and torch.all(output[1:, 2] == 0), "padding must stay zero"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
def test_layer_dtypes(variant, dtype, launch_mode, device):
    """Storage dtypes with fp32 accumulation (float32 itself: every other test): compared with a float64 oracle
    on the same (rounded) values."""
    check_layer(variant, 3, 3, 7, 33, device, dtype=dtype, oracle_dtype=torch.float64)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_error_within_twice_torch(variant, dtype, device):
    """Derived tolerance: our error against float64 is at most twice that of PyTorch computing the same
    formulation in the same low precision (torch.nn.GRU for cudnn, the reference for classic), plus a small atol."""
    x, h0, w_ih, w_hh, b_ih, b_hh = (t.detach() for t in random_layer(8, 4, 7, 33, device))
    low = [t.to(dtype) for t in (x, h0, w_ih, w_hh, b_ih, b_hh)]
    exact, _ = oracle_layer(variant, *(t.double() for t in low))
    ours, _ = tritongru.gru_layer(*low, variant=variant)
    if variant == "cudnn" and ON_GPU:
        torch_low, _ = oracle_layer(variant, *low)
    else:
        torch_low, _ = reference.gru_layer_ref(*low, variant=variant)
    our_error = (ours.double() - exact).abs().max().item()
    torch_error = (torch_low.double() - exact).abs().max().item()
    assert our_error <= 2 * torch_error + 1e-3, (our_error, torch_error)


@pytest.mark.parametrize("variant", VARIANTS)
def test_tf32_option_stays_close_to_ieee(variant, device):
    """allow_tf32 changes only the precision of the float32 products: within TF32's tolerance of IEEE."""
    x, h0, w_ih, w_hh, b_ih, b_hh = (t.detach() for t in random_layer(4, 3, 7, 33, device))
    ieee, _ = tritongru.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, variant=variant)
    tf32, _ = tritongru.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, variant=variant, allow_tf32=True)
    tolerance = PRECISIONS["tf32"]
    torch.testing.assert_close(tf32, ieee, atol=tolerance.atol, rtol=tolerance.rtol)


@pytest.mark.skipif(not ON_GPU, reason="the CPU interpreter multiplies TF32 operands exactly, as IEEE float32")
@pytest.mark.parametrize("variant", VARIANTS)
def test_tf32_is_really_used_on_the_gpu(variant, device):
    """On a GPU the TF32 products round their operands to 10 mantissa bits: the result moves away from IEEE
    float32 by more than float32 rounding, and stays within what TF32 allows."""
    x, h0, w_ih, w_hh, b_ih, b_hh = (t.detach() for t in random_layer(8, 5, 64, 96, device))
    exact, _ = reference.gru_layer_ref(*(t.double() for t in (x, h0, w_ih, w_hh, b_ih, b_hh)), variant=variant)
    ieee, _ = tritongru.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, variant=variant)
    tf32, _ = tritongru.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, variant=variant, allow_tf32=True)
    ieee_error = (ieee.double() - exact).abs().max().item()
    tf32_error = (tf32.double() - exact).abs().max().item()
    assert tf32_error > 8 * ieee_error, (tf32_error, ieee_error)
    assert tf32_error < PRECISIONS["tf32"].atol


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("B, I, H", [pytest.param(1, 7, 17, id="B1-I7-H17"), pytest.param(17, 9, 33, id="B17-I9-H33")])
def test_cell_forward_and_gradients(variant, B, I, H, launch_mode, device):
    """The fused concat-matmul cell: one launch, or one per phase for the classic form run per step."""
    _, h, w_ih, w_hh, b_ih, b_hh = random_layer(1, B, I, H, device)
    x = torch.randn(B, I, device=device, requires_grad=True)
    leaves = [x, h, w_ih, w_hh, b_ih, b_hh]
    ours = tritongru.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, variant=variant)
    if variant == "cudnn":
        cell = torch.nn.GRUCell(I, H, device=device)
        params = {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": b_ih, "bias_hh": b_hh}
        expected = torch.func.functional_call(cell, params, (x, h))
    else:
        expected = reference.gru_cell_ref(x, h, w_ih, w_hh, b_ih, b_hh, variant="classic")
    assert_close(ours, expected, torch.float32, "h'")
    for name, actual, wanted in zip(
        ["x", "h", "w_ih", "w_hh", "b_ih", "b_hh"], grads([ours], leaves), grads([expected], leaves), strict=True
    ):
        assert_close(actual, wanted, torch.float32, f"d {name}")


@pytest.fixture
def forward_launches(monkeypatch) -> list:
    """The grid of every forward-kernel launch made while the test runs."""
    launches = []
    real = tritongru.launchers.gru_forward_kernel

    class Counting:
        def __getitem__(self, grid):
            launches.append(grid)
            return real[grid]

    monkeypatch.setattr(tritongru.launchers, "gru_forward_kernel", Counting())
    return launches


def test_cell_launch_is_single(forward_launches, device):
    """GRUCell is one kernel launch per step, for both formulations."""
    for variant in VARIANTS:
        cell = tritongru.GRUCell(5, 40, variant=variant, device=device)
        with torch.no_grad():
            cell(torch.randn(3, 5, device=device))
    assert len(forward_launches) == 2


@pytest.mark.parametrize("variant", VARIANTS)
def test_launches_per_mode(variant, forward_launches, monkeypatch, device):
    """One slice or a grid barrier: the whole time loop in one launch of ``slices x groups of batch blocks``
    programs (grid-sync: each program steps both batch blocks of B=17); per step: T launches (cudnn) or 2T
    (classic, one per phase)."""
    gi = torch.randn(6, 17, 3 * 33, device=device)
    h0 = torch.zeros(17, 33, device=device)
    w_hh = torch.randn(3 * 33, 33, device=device)
    per_step = 6 * (2 if variant == "classic" else 1)
    expected = {"one-slice": [(1, 2)], "grid-sync": [(3, 1)], "per-step": [(3, 2)] * per_step}
    for mode, config in LAUNCH_MODES.items():
        forward_launches.clear()
        with contextlib.ExitStack() as stack:
            if mode == "grid-sync" and not ON_GPU:
                stack.enter_context(concurrent_programs(monkeypatch))
            tritongru.launchers.forward_sequence(gi, h0, w_hh, None, variant=variant, config=config)
        assert forward_launches == expected[mode], mode


@pytest.mark.parametrize("variant", VARIANTS)
def test_poisoned_outputs_are_all_written(variant, poison_empty, launch_mode, device):
    """Every output buffer starts as NaN: any element a kernel forgets to write would surface."""
    tensors = random_layer(5, 3, 7, 33, device)
    output, h_n = tritongru.gru_layer(*tensors, variant=variant, lengths=torch.tensor([5, 3, 4], device=device))
    results = [output, h_n, *grads([output, h_n], tensors)]
    for result in results:
        assert torch.isfinite(result).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_two_runs_bitwise_equal(variant, launch_mode, device):
    tensors = random_layer(3, 17, 7, 33, device)
    runs = []
    for _ in range(2):
        output, h_n = tritongru.gru_layer(*tensors, variant=variant)
        runs.append([output, h_n, *grads([output, h_n], tensors)])
    for first, second in zip(*runs, strict=True):
        assert torch.equal(first, second)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_layer(variant, device):
    tensors = random_layer(3, 2, 3, 5, device, dtype=torch.float64)
    lengths = torch.tensor([3, 2], device=device)
    assert torch.autograd.gradcheck(
        lambda *ts: tritongru.gru_layer(*ts, variant=variant, lengths=lengths),
        tensors,
        eps=1e-6,
        atol=1e-7,
        fast_mode=True,
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_cell(variant, device):
    _, h, w_ih, w_hh, b_ih, b_hh = random_layer(1, 2, 3, 5, device, dtype=torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *ts: tritongru.gru_cell(*ts, variant=variant),
        (x, h, w_ih, w_hh, b_ih, b_hh),
        eps=1e-6,
        atol=1e-7,
        fast_mode=True,
    )


@pytest.mark.parametrize(
    "variant", ["classic"]
)  # the cudnn form's stack: against torch's own gradients in test_modules
def test_gradcheck_bidirectional_stack(variant, device):
    """Two layers, both directions, variable lengths: gradients through reversal, concatenation and layers."""
    module = tritongru.GRU(2, 3, num_layers=2, bidirectional=True, variant=variant, dtype=torch.float64, device=device)
    x = torch.randn(2, 2, 2, dtype=torch.float64, device=device, requires_grad=True)
    h0 = torch.randn(4, 2, 3, dtype=torch.float64, device=device, requires_grad=True)
    weights = [p for p in module.parameters()]
    names = [n for n, _ in module.named_parameters()]

    def run(x, h0, *params):
        output, h_n = torch.func.functional_call(module, dict(zip(names, params, strict=True)), (x, h0))
        return output, h_n

    assert torch.autograd.gradcheck(run, (x, h0, *weights), eps=1e-6, atol=1e-7, fast_mode=True)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "T, B, I, H", [pytest.param(63, 2, 3, 17, id="T63-B2-I3-H17"), pytest.param(2, 2, 3, 500, id="T2-B2-I3-H500")]
)
def test_long_sequence_and_wide_hidden(variant, T, B, I, H, device):
    """The heuristic config (no forced tiles): a long time loop, and a hidden width of many tiles."""
    check_layer(variant, T, B, I, H, device)
