"""Module-level behaviour of the drop-ins ``tritongru.GRU`` / ``tritongru.GRUCell``: state_dict compatibility with
torch's modules, forward and every gradient against an oracle on every input form torch accepts (batched,
unbatched, batch_first, PackedSequence, non-contiguous), dropout, eval-mode backward, no_grad, and dtypes.

Oracles: ``torch.nn.GRU`` / ``GRUCell`` with copied weights for ``variant="cudnn"``; ``tritongru.reference``
(``gru_ref`` / ``gru_cell_ref``) wrapped the way ``torch.nn.GRU`` wraps its layers for ``variant="classic"``.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close, flat_weights, grads, gru_pair, tolerance
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import tritongru
from tritongru.reference import gru_cell_ref, gru_layer_ref, gru_ref

VARIANTS = [pytest.param(variant, id=variant) for variant in tritongru.VARIANTS]


class ReferenceGRU(nn.Module):
    """``tritongru.reference.gru_ref`` on ``gru``'s weights, taking and returning what ``torch.nn.GRU`` does
    (batched/unbatched, batch_first, PackedSequence, hx None). Written independently of tritongru.modules."""

    def __init__(self, gru: nn.GRU, variant: str) -> None:
        super().__init__()
        self.gru, self.variant = gru, variant

    def forward(self, input, hx=None):
        gru = self.gru
        directions = 2 if gru.bidirectional else 1
        lengths = None
        unbatched = False
        if isinstance(input, PackedSequence):
            x, lengths = pad_packed_sequence(input)
            lengths = lengths.to(x.device)
        elif input.dim() == 2:
            unbatched = True
            x = input.unsqueeze(1)
            hx = hx.unsqueeze(1) if hx is not None else None
        else:
            x = input.transpose(0, 1) if gru.batch_first else input
        if hx is None:
            hx = torch.zeros(gru.num_layers * directions, x.shape[1], gru.hidden_size, dtype=x.dtype, device=x.device)
        output, h_n = gru_ref(
            x,
            hx,
            flat_weights(gru),
            num_layers=gru.num_layers,
            bidirectional=gru.bidirectional,
            variant=self.variant,
            lengths=lengths,
        )
        if isinstance(input, PackedSequence):
            packed = pack_padded_sequence(output, lengths.cpu(), enforce_sorted=input.sorted_indices is None)
            return packed, h_n
        if unbatched:
            return output.squeeze(1), h_n.squeeze(1)
        return (output.transpose(0, 1) if gru.batch_first else output), h_n


class ReferenceGRUCell(nn.Module):
    """``tritongru.reference.gru_cell_ref`` on ``cell``'s weights, with ``torch.nn.GRUCell``'s signature."""

    def __init__(self, cell: nn.GRUCell, variant: str) -> None:
        super().__init__()
        self.cell, self.variant = cell, variant

    def forward(self, input, hx=None):
        cell = self.cell
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        if hx is None:
            hx = torch.zeros(x.shape[0], cell.hidden_size, dtype=x.dtype, device=x.device)
        elif unbatched:
            hx = hx.unsqueeze(0)
        h = gru_cell_ref(x, hx, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, variant=self.variant)
        return h.squeeze(0) if unbatched else h


@pytest.fixture(autouse=True)
def _ieee_float32_oracle():
    """On the GPU torch.nn.GRU runs cuDNN, which uses TF32 for float32 unless told not to: keep the oracle exact."""
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
        yield


def oracle_of(variant: str, torch_module: nn.Module) -> nn.Module:
    """The oracle computing ``variant`` with ``torch_module``'s weights (its parameters, in the same order)."""
    if variant == "cudnn":
        return torch_module
    if isinstance(torch_module, nn.GRUCell):
        return ReferenceGRUCell(torch_module, variant)
    return ReferenceGRU(torch_module, variant)


def gru_and_oracle(variant, *args, device, dtype=torch.float32, **kwargs):
    ours, torch_gru = gru_pair(variant, *args, device=device, dtype=dtype, **kwargs)
    return ours, oracle_of(variant, torch_gru)


def cell_and_oracle(variant, *args, device, dtype=torch.float32, **kwargs):
    ours = tritongru.GRUCell(*args, variant=variant, device=device, dtype=dtype, **kwargs)
    torch_cell = nn.GRUCell(*args, device=device, dtype=dtype, **kwargs)
    torch_cell.load_state_dict(ours.state_dict())
    return ours, oracle_of(variant, torch_cell)


def outputs_of(result) -> list[torch.Tensor]:
    """Flatten ``(output, h_n)`` / ``h'`` to tensors (a PackedSequence contributes its data)."""
    if isinstance(result, torch.Tensor):
        return [result]
    return [r.data if isinstance(r, PackedSequence) else r for r in result]


def check_against_oracle(ours, oracle, run, leaves, dtype=torch.float32, leaf_names=None):
    """``run(module)`` on both modules; compare every output, then the gradients of a random projection of all
    outputs with respect to ``leaves`` (input, hx, ...) and every parameter of each module."""
    actual, expected = outputs_of(run(ours)), outputs_of(run(oracle))
    assert len(actual) == len(expected)
    for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.shape == e.shape, f"output {index}: shape {tuple(a.shape)} vs {tuple(e.shape)}"
        assert a.dtype == e.dtype, f"output {index}: dtype {a.dtype} vs {e.dtype}"
        assert_close(a, e, dtype, f"output {index}")
    names = list(leaf_names or [f"leaf {i}" for i in range(len(leaves))])
    ours_params = [p for p in ours.parameters() if p.requires_grad]
    oracle_params = [p for p in oracle.parameters() if p.requires_grad]
    names += [f"d{name}" for name, p in ours.named_parameters() if p.requires_grad]
    assert len(ours_params) == len(oracle_params)
    actual_grads = grads(actual, list(leaves) + ours_params)
    expected_grads = grads(expected, list(leaves) + oracle_params)
    for name, a, e in zip(names, actual_grads, expected_grads, strict=True):
        assert_close(a, e, dtype, name)
    return actual, expected


def leaf(*shape, device, dtype=torch.float32, scale=1.0):
    return (scale * torch.randn(*shape, dtype=torch.float64)).to(device=device, dtype=dtype).requires_grad_()


# ------------------------------------------------------------------------------------------------- state_dict

GRU_CONFIGS = [
    pytest.param(dict(num_layers=1), id="L1"),
    pytest.param(dict(num_layers=3), id="L3"),
    pytest.param(dict(num_layers=2, bidirectional=True), id="L2-bidir"),
    pytest.param(dict(num_layers=2, bias=False), id="L2-nobias"),
    pytest.param(dict(bidirectional=True, bias=False, batch_first=True), id="bidir-nobias-batch_first"),
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("config", GRU_CONFIGS)
def test_state_dict_keys_and_shapes_match_torch(variant, config, device):
    ours = tritongru.GRU(5, 11, variant=variant, device=device, **config)
    theirs = nn.GRU(5, 11, device=device, **config)
    ours_state, their_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(their_state)
    assert {k: v.shape for k, v in ours_state.items()} == {k: v.shape for k, v in their_state.items()}
    assert {k: v.dtype for k, v in ours_state.items()} == {k: v.dtype for k, v in their_state.items()}
    assert [name for name, _ in ours.named_parameters()] == [name for name, _ in theirs.named_parameters()]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bias", [pytest.param(True, id="bias"), pytest.param(False, id="nobias")])
def test_cell_state_dict_keys_and_shapes_match_torch(variant, bias, device):
    ours = tritongru.GRUCell(5, 11, bias=bias, variant=variant, device=device)
    theirs = nn.GRUCell(5, 11, bias=bias, device=device)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert list(ours.state_dict()) == list(theirs.state_dict())


@pytest.mark.parametrize("variant", VARIANTS)
def test_init_matches_torch_under_the_same_seed(variant, device):
    torch.manual_seed(7)
    ours = tritongru.GRU(5, 11, num_layers=2, bidirectional=True, variant=variant, device=device)
    torch.manual_seed(7)
    theirs = nn.GRU(5, 11, num_layers=2, bidirectional=True, device=device)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "direction", [pytest.param("torch_to_ours", id="torch-to-ours"), pytest.param("ours_to_torch", id="ours-to-torch")]
)
def test_load_state_dict_strict_both_ways(variant, direction, device):
    config = dict(num_layers=2, bidirectional=True)
    ours = tritongru.GRU(6, 9, variant=variant, device=device, **config)
    theirs = nn.GRU(6, 9, device=device, **config)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    source, target = (theirs, ours) if direction == "torch_to_ours" else (ours, theirs)
    result = target.load_state_dict(source.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    if direction == "torch_to_ours":
        assert any(not torch.equal(before[k], v) for k, v in ours.state_dict().items())
    x = torch.randn(4, 3, 6, device=device)
    h0 = torch.randn(4, 3, 9, device=device)
    with torch.no_grad():
        actual = ours(x, h0)
        expected = oracle_of(variant, theirs)(x, h0)
    assert_close(actual[0], expected[0], torch.float32, "output")
    assert_close(actual[1], expected[1], torch.float32, "h_n")


@pytest.mark.parametrize("variant", VARIANTS)
def test_cell_load_state_dict_strict_both_ways(variant, device):
    ours = tritongru.GRUCell(6, 9, variant=variant, device=device)
    theirs = nn.GRUCell(6, 9, device=device)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    other = nn.GRUCell(6, 9, device=device)
    other.load_state_dict(ours.state_dict(), strict=True)
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
        assert torch.equal(other.state_dict()[key], value), key
    x, h = torch.randn(3, 6, device=device), torch.randn(3, 9, device=device)
    with torch.no_grad():
        assert_close(ours(x, h), oracle_of(variant, other)(x, h), torch.float32, "h'")


# ------------------------------------------------------------------------------- forward and every gradient

GRU_CASES = [
    pytest.param(dict(num_layers=2), dict(T=5, B=3), id="L2-T5-B3-I7-H17"),
    pytest.param(dict(num_layers=3, hidden_size=33), dict(T=3, B=2), id="L3-H33"),
    pytest.param(dict(bidirectional=True), dict(T=4, B=3), id="bidir"),
    pytest.param(dict(num_layers=2, bidirectional=True), dict(T=4, B=2, hx=False), id="L2-bidir-no-h0"),
    pytest.param(dict(batch_first=True), dict(T=5, B=3), id="batch_first"),
    pytest.param(dict(batch_first=True, bidirectional=True), dict(T=3, B=4, hx=False), id="batch_first-bidir-no-h0"),
    pytest.param(dict(bias=False, num_layers=2), dict(T=4, B=3), id="nobias-L2"),
    pytest.param(dict(), dict(T=5, B=3, hx=False), id="no-h0"),
    pytest.param(dict(), dict(T=1, B=1), id="T1-B1"),
    pytest.param(dict(hidden_size=1, input_size=1), dict(T=3, B=2), id="I1-H1"),
    pytest.param(dict(num_layers=2), dict(T=5, unbatched=True), id="unbatched-h0"),
    pytest.param(dict(bidirectional=True), dict(T=4, unbatched=True, hx=False), id="unbatched-bidir-no-h0"),
    pytest.param(dict(batch_first=True), dict(T=4, unbatched=True), id="unbatched-batch_first"),
    pytest.param(dict(), dict(T=4, B=3, input_grad=False), id="params-only-grad"),
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("config, case", GRU_CASES)
def test_gru_forward_and_gradients(variant, config, case, device, poison_empty):
    config = {"input_size": 7, "hidden_size": 17, **config}
    input_size, hidden_size = config.pop("input_size"), config.pop("hidden_size")
    ours, oracle = gru_and_oracle(variant, input_size, hidden_size, device=device, **config)
    directions = 2 if config.get("bidirectional") else 1
    T, unbatched = case["T"], case.get("unbatched", False)
    if unbatched:
        x_shape, hx_shape = (T, input_size), (ours.num_layers * directions, hidden_size)
    else:
        B = case["B"]
        x_shape = (B, T, input_size) if config.get("batch_first") else (T, B, input_size)
        hx_shape = (ours.num_layers * directions, B, hidden_size)
    x = leaf(*x_shape, device=device).requires_grad_(case.get("input_grad", True))
    hx = leaf(*hx_shape, device=device, scale=0.5) if case.get("hx", True) else None
    x_before, hx_before = x.detach().clone(), hx.detach().clone() if hx is not None else None
    leaves = [t for t in (x, hx) if t is not None and t.requires_grad]
    names = [n for n, t in (("dinput", x), ("dh0", hx)) if t is not None and t.requires_grad]

    actual, _ = check_against_oracle(ours, oracle, lambda m: m(x, hx), leaves, leaf_names=names)

    expected_output_shape = (*x_shape[:-1], directions * hidden_size)
    assert actual[0].shape == expected_output_shape
    assert actual[1].shape == hx_shape
    assert torch.equal(x.detach(), x_before), "forward/backward modified the input"
    if hx is not None:
        assert torch.equal(hx.detach(), hx_before), "forward/backward modified hx"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("used", [pytest.param(0, id="output-only"), pytest.param(1, id="h_n-only")])
def test_gradient_through_one_output_only(variant, used, device):
    """The loss uses output or h_n alone: the other's gradient is absent (None/zeros) and must count as zero."""
    ours, oracle = gru_and_oracle(variant, 5, 9, num_layers=2, device=device)
    x = leaf(4, 3, 5, device=device)
    h0 = leaf(2, 3, 9, device=device)
    actual = grads([ours(x, h0)[used]], [x, h0, *ours.parameters()])
    expected = grads([oracle(x, h0)[used]], [x, h0, *oracle.parameters()])
    names = ["dinput", "dh0"] + [f"d{name}" for name, _ in ours.named_parameters()]
    for name, a, e in zip(names, actual, expected, strict=True):
        assert_close(a, e, torch.float32, name)


def packed_input(lengths, input_size, device, enforce_sorted, batch_first=False):
    """A padded leaf ``[T, B, I]`` (``[B, T, I]`` if batch_first) and a function packing it."""
    T, B = max(lengths), len(lengths)
    padded = leaf(*((B, T, input_size) if batch_first else (T, B, input_size)), device=device)

    def pack():
        return pack_padded_sequence(
            padded, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=enforce_sorted
        )

    return padded, pack


PACKED_CASES = [
    pytest.param(dict(num_layers=2, bidirectional=True), [3, 5, 1, 4], False, True, id="unsorted-L2-bidir-h0"),
    pytest.param(dict(), [2, 4, 4, 1], False, False, id="unsorted-no-h0"),
    pytest.param(dict(bidirectional=True), [5, 3, 3, 1], True, True, id="sorted-bidir-h0"),
    pytest.param(dict(num_layers=2), [4, 2, 1], True, False, id="sorted-L2-no-h0"),
    pytest.param(dict(batch_first=True, bidirectional=True), [2, 5, 3], False, True, id="unsorted-batch_first"),
    pytest.param(dict(), [3, 3], False, True, id="equal-lengths"),
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("config, lengths, enforce_sorted, with_hx", PACKED_CASES)
def test_packed_sequence(variant, config, lengths, enforce_sorted, with_hx, device, poison_empty):
    input_size, hidden_size = 6, 9
    ours, oracle = gru_and_oracle(variant, input_size, hidden_size, device=device, **config)
    directions = 2 if config.get("bidirectional") else 1
    padded, pack = packed_input(lengths, input_size, device, enforce_sorted, config.get("batch_first", False))
    # hx in the caller's (unsorted) order, as torch takes it
    hx = leaf(ours.num_layers * directions, len(lengths), hidden_size, device=device) if with_hx else None
    leaves = [padded] + ([hx] if with_hx else [])
    names = ["dinput", "dh0"][: len(leaves)]

    check_against_oracle(ours, oracle, lambda m: m(pack(), hx), leaves, leaf_names=names)

    packed = pack()
    with torch.no_grad():
        output, h_n = ours(packed, hx)
        torch_output, torch_h_n = nn.GRU(input_size, hidden_size, device=device, **config)(packed, hx)
    assert isinstance(output, PackedSequence)
    assert torch.equal(output.batch_sizes, torch_output.batch_sizes)
    assert torch.equal(output.batch_sizes, packed.batch_sizes)
    for field in ("sorted_indices", "unsorted_indices"):
        ours_field, torch_field = getattr(output, field), getattr(torch_output, field)
        assert (ours_field is None) == (torch_field is None), field
        if torch_field is not None:
            assert torch.equal(ours_field, torch_field), field
    assert output.data.shape == torch_output.data.shape
    assert h_n.shape == torch_h_n.shape
    # each sequence's h_n (forward direction, last layer) is its output at its last valid step, in caller order
    unpacked, unpacked_lengths = pad_packed_sequence(output)
    assert unpacked_lengths.tolist() == lengths
    last_layer_forward = h_n[(ours.num_layers - 1) * directions]
    for b, n in enumerate(lengths):
        assert torch.equal(unpacked[n - 1, b, :hidden_size], last_layer_forward[b]), f"sequence {b}"
        assert torch.all(unpacked[n:, b] == 0), f"sequence {b}: padding"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "layout",
    [
        pytest.param("transposed", id="transposed"),
        pytest.param("strided", id="strided"),
        pytest.param("expanded-batch", id="expanded-batch"),
    ],
)
def test_non_contiguous_inputs(variant, layout, device):
    ours, oracle = gru_and_oracle(variant, 5, 17, num_layers=2, device=device)
    T, B = 4, 3
    if layout == "transposed":
        base = leaf(B, T, 5, device=device)
        make_x = lambda: base.transpose(0, 1)
    elif layout == "strided":
        base = leaf(2 * T, B, 10, device=device)
        make_x = lambda: base[::2, :, 1::2]
    else:
        base = leaf(T, 1, 5, device=device)
        make_x = lambda: base.expand(T, B, 5)
    assert not make_x().is_contiguous()
    hx_base = leaf(B, 2, 17, device=device)
    make_hx = lambda: hx_base.transpose(0, 1)
    assert not make_hx().is_contiguous()
    check_against_oracle(ours, oracle, lambda m: m(make_x(), make_hx()), [base, hx_base], leaf_names=["dx", "dh0"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_batch_first_equals_time_major(variant, device):
    torch.manual_seed(3)
    time_major = tritongru.GRU(5, 17, num_layers=2, variant=variant, device=device)
    batch_first = tritongru.GRU(5, 17, num_layers=2, batch_first=True, variant=variant, device=device)
    batch_first.load_state_dict(time_major.state_dict())
    x = torch.randn(4, 3, 5, device=device)
    with torch.no_grad():
        out_tm, h_tm = time_major(x)
        out_bf, h_bf = batch_first(x.transpose(0, 1).contiguous())
    assert torch.equal(out_bf.transpose(0, 1), out_tm)
    assert torch.equal(h_bf, h_tm)


CELL_CASES = [
    pytest.param(dict(B=3, hx=True), id="batched-hx"),
    pytest.param(dict(B=4, hx=False), id="batched-no-hx"),
    pytest.param(dict(B=1, hx=True), id="B1-hx"),
    pytest.param(dict(B=None, hx=True), id="unbatched-hx"),
    pytest.param(dict(B=None, hx=False), id="unbatched-no-hx"),
    pytest.param(dict(B=3, hx=True, bias=False), id="nobias"),
    pytest.param(dict(B=2, hx=True, hidden_size=33), id="H33"),
    pytest.param(dict(B=3, hx=True, input_grad=False), id="hx-and-params-grad-only"),
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", CELL_CASES)
def test_cell_forward_and_gradients(variant, case, device, poison_empty):
    input_size, hidden_size = 7, case.get("hidden_size", 17)
    ours, oracle = cell_and_oracle(variant, input_size, hidden_size, bias=case.get("bias", True), device=device)
    batch = () if case["B"] is None else (case["B"],)
    x = leaf(*batch, input_size, device=device).requires_grad_(case.get("input_grad", True))
    hx = leaf(*batch, hidden_size, device=device) if case["hx"] else None
    named = [(n, t) for n, t in (("dinput", x), ("dhx", hx)) if t is not None and t.requires_grad]
    leaves, names = [t for _, t in named], [n for n, _ in named]
    actual, _ = check_against_oracle(ours, oracle, lambda m: m(x, hx), leaves, leaf_names=names)
    assert actual[0].shape == (*batch, hidden_size)


@pytest.mark.parametrize("variant", VARIANTS)
def test_cell_steps_match_gru_layer(variant, device):
    """Stepping the cell over a sequence with the layer's weights gives the layer's outputs."""
    gru = tritongru.GRU(5, 17, variant=variant, device=device)
    cell = tritongru.GRUCell(5, 17, variant=variant, device=device)
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in gru.state_dict().items()})
    x, h = torch.randn(4, 3, 5, device=device), torch.randn(3, 17, device=device)
    with torch.no_grad():
        output, h_n = gru(x, h[None])
        steps = []
        for t in range(4):
            h = cell(x[t], h)
            steps.append(h)
    assert_close(torch.stack(steps), output, torch.float32, "cell steps vs layer output")
    assert_close(h, h_n[0], torch.float32, "cell last state vs h_n")


# ---------------------------------------------------------------------------------------------------- dropout


def _forward(module, x, seed):
    torch.manual_seed(seed)
    return module(x)


@pytest.mark.parametrize("variant", VARIANTS)
def test_dropout_training_differs_from_eval_and_is_reproducible(variant, device):
    ours, oracle = gru_and_oracle(variant, 5, 17, num_layers=3, dropout=0.5, device=device)
    x = torch.randn(4, 3, 5, device=device)
    with torch.no_grad():
        first, first_h = _forward(ours.train(), x, seed=11)
        again, again_h = _forward(ours, x, seed=11)
        other, _ = _forward(ours, x, seed=12)
        evaluated, evaluated_h = ours.eval()(x)
        expected, expected_h = oracle.eval()(x)
    assert torch.equal(first, again) and torch.equal(first_h, again_h), "same seed, different dropout result"
    assert not torch.allclose(first, other), "different seeds gave the same dropout masks"
    assert (first - evaluated).abs().max() > 1e-2, "training-mode dropout changed nothing"
    assert_close(first_h[0], evaluated_h[0], torch.float32, "layer 0 h_n is before any dropout")
    assert_close(evaluated, expected, torch.float32, "eval output")
    assert_close(evaluated_h, expected_h, torch.float32, "eval h_n")


class DropoutRecorder:
    """Stands in for ``torch.nn.functional.dropout``: draws the real mask (on a tensor of ones shaped like the
    input) and records it, so an oracle can apply the same masks."""

    def __init__(self) -> None:
        self.real = F.dropout
        self.masks: list[torch.Tensor] = []
        self.ps: list[float] = []

    def __call__(self, input, p=0.5, training=True, inplace=False):
        if not training or p == 0:
            return input
        mask = self.real(torch.ones_like(input), p=p, training=True)
        self.masks.append(mask)
        self.ps.append(p)
        return input * mask


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "config",
    [
        pytest.param(dict(num_layers=3), id="L3"),
        pytest.param(dict(num_layers=2, bidirectional=True), id="L2-bidir"),
    ],
)
def test_dropout_between_layers_matches_oracle_with_the_same_masks(variant, config, device, monkeypatch):
    """Training mode: dropout with p on every layer's output but the last; forward and gradients equal the
    reference run layer by layer with the recorded masks."""
    p = 0.4
    ours = tritongru.GRU(5, 9, dropout=p, variant=variant, device=device, **config).train()
    directions = 2 if ours.bidirectional else 1
    recorder = DropoutRecorder()
    monkeypatch.setattr(torch.nn.functional, "dropout", recorder)
    x = leaf(4, 3, 5, device=device)
    hx = leaf(ours.num_layers * directions, 3, 9, device=device)
    output, h_n = ours(x, hx)
    monkeypatch.undo()

    assert len(recorder.masks) == ours.num_layers - 1
    assert recorder.ps == [p] * (ours.num_layers - 1)
    for mask in recorder.masks:
        assert mask.shape == (4, 3, directions * 9)
        kept = mask != 0
        assert 0 < kept.sum() < mask.numel()
        assert torch.allclose(mask[kept], torch.full_like(mask[kept], 1 / (1 - p)))

    weights = flat_weights(ours)
    layer_input, expected_h = x, []
    for layer in range(ours.num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            out, h = gru_layer_ref(
                layer_input, hx[index], *weights[4 * index : 4 * index + 4], variant=variant, reverse=direction == 1
            )
            outputs.append(out)
            expected_h.append(h)
        layer_input = torch.cat(outputs, dim=-1)
        if layer < ours.num_layers - 1:
            layer_input = layer_input * recorder.masks[layer]
    expected, expected_h = layer_input, torch.stack(expected_h)

    assert_close(output, expected, torch.float32, "output")
    assert_close(h_n, expected_h, torch.float32, "h_n")
    params = list(ours.parameters())
    actual_grads = grads([output, h_n], [x, hx, *params])
    expected_grads = grads([expected, expected_h], [x, hx, *params])
    names = ["dinput", "dh0"] + [f"d{name}" for name, _ in ours.named_parameters()]
    for name, a, e in zip(names, actual_grads, expected_grads, strict=True):
        assert a.abs().sum() > 0, f"{name}: no gradient flowed"
        assert_close(a, e, torch.float32, name)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "dropout, training",
    [pytest.param(0.0, True, id="dropout0-train"), pytest.param(0.5, False, id="dropout0.5-eval")],
)
def test_no_dropout_equals_oracle(variant, dropout, training, device):
    ours, oracle = gru_and_oracle(variant, 5, 9, num_layers=2, dropout=dropout, device=device)
    ours.train(training)
    # the oracle computes without dropout in training mode (cuDNN's RNN backward refuses eval mode)
    oracle.dropout = 0.0
    x = leaf(4, 3, 5, device=device)
    check_against_oracle(ours, oracle, lambda m: m(x), [x], leaf_names=["dinput"])


# ----------------------------------------------------------------------------------- eval mode, no_grad, repr


@pytest.mark.parametrize("variant", VARIANTS)
def test_eval_mode_backward_populates_grads(variant, device):
    ours, oracle = gru_and_oracle(variant, 5, 9, num_layers=2, bidirectional=True, device=device)
    ours.eval()
    # the oracle stays in training mode (no dropout, so the same function): cuDNN's RNN backward refuses eval mode
    x_ours = torch.randn(4, 3, 5, device=device, requires_grad=True)
    x_oracle = x_ours.detach().clone().requires_grad_()
    h0 = torch.randn(4, 3, 9, device=device)
    for module, x in ((ours, x_ours), (oracle, x_oracle)):
        output, h_n = module(x, h0)
        (output.pow(2).sum() + h_n.sin().sum()).backward()
    for (name, p), q in zip(ours.named_parameters(), oracle.parameters(), strict=True):
        assert p.grad is not None, f"{name}: no grad in eval mode"
        assert_close(p.grad, q.grad, torch.float32, name)
    assert_close(x_ours.grad, x_oracle.grad, torch.float32, "dinput")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("packed", [pytest.param(False, id="tensor"), pytest.param(True, id="packed")])
def test_no_grad_inference_equals_grad_enabled_forward(variant, packed, device):
    ours = tritongru.GRU(5, 17, num_layers=2, bidirectional=True, variant=variant, device=device)
    x = torch.randn(4, 3, 5, device=device)
    h0 = torch.randn(4, 3, 17, device=device)
    inputs = pack_padded_sequence(x, torch.tensor([4, 2, 3]), enforce_sorted=False) if packed else x
    with torch.no_grad():
        output, h_n = outputs_of(ours(inputs, h0))
    assert not output.requires_grad and not h_n.requires_grad
    graded_output, graded_h_n = outputs_of(ours(inputs, h0))
    assert graded_output.requires_grad
    torch.testing.assert_close(output, graded_output.detach(), rtol=0, atol=0)
    torch.testing.assert_close(h_n, graded_h_n.detach(), rtol=0, atol=0)
    again_output, again_h_n = outputs_of(ours(inputs, h0))
    assert torch.equal(again_output, graded_output) and torch.equal(again_h_n, graded_h_n), "not deterministic"


@pytest.mark.parametrize("variant", VARIANTS)
def test_cell_no_grad_equals_grad_enabled(variant, device):
    cell = tritongru.GRUCell(7, 17, variant=variant, device=device)
    x, h = torch.randn(3, 7, device=device), torch.randn(3, 17, device=device)
    with torch.no_grad():
        inferred = cell(x, h)
    graded = cell(x, h)
    assert graded.requires_grad and not inferred.requires_grad
    torch.testing.assert_close(inferred, graded.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_extra_repr_mentions_variant(variant, device):
    gru = tritongru.GRU(5, 9, num_layers=2, variant=variant, device=device)
    cell = tritongru.GRUCell(5, 9, variant=variant, device=device)
    assert f"variant='{variant}'" in repr(gru)
    assert "num_layers=2" in repr(gru)
    assert f"variant='{variant}'" in repr(cell)
    assert gru.variant == variant and cell.variant == variant


@pytest.mark.parametrize("variant", VARIANTS)
def test_deepcopy_keeps_variant_and_outputs(variant, device):
    gru = tritongru.GRU(5, 9, variant=variant, device=device)
    clone = copy.deepcopy(gru)
    assert clone.variant == variant and isinstance(clone, tritongru.GRU)
    x = torch.randn(3, 2, 5, device=device)
    with torch.no_grad():
        assert torch.equal(clone(x)[0], gru(x)[0])


def test_default_variant_is_cudnn(device):
    assert tritongru.GRU(5, 9, device=device).variant == "cudnn"
    assert tritongru.GRUCell(5, 9, device=device).variant == "cudnn"


def test_classic_differs_from_cudnn_for_the_same_weights(device):
    cudnn = tritongru.GRU(5, 9, num_layers=2, variant="cudnn", device=device)
    classic = tritongru.GRU(5, 9, num_layers=2, variant="classic", device=device)
    classic.load_state_dict(cudnn.state_dict())
    cell_cudnn = tritongru.GRUCell(5, 9, variant="cudnn", device=device)
    cell_classic = tritongru.GRUCell(5, 9, variant="classic", device=device)
    cell_classic.load_state_dict(cell_cudnn.state_dict())
    x, h0 = torch.randn(4, 3, 5, device=device), torch.randn(2, 3, 9, device=device)
    with torch.no_grad():
        assert (cudnn(x, h0)[0] - classic(x, h0)[0]).abs().max() > 1e-2
        assert (cell_cudnn(x[0], h0[0]) - cell_classic(x[0], h0[0])).abs().max() > 1e-2


# ----------------------------------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("variant", VARIANTS)
def test_float64_module(variant, device):
    ours, oracle = gru_and_oracle(variant, 5, 9, num_layers=2, bidirectional=True, device=device, dtype=torch.float64)
    x = leaf(4, 3, 5, device=device, dtype=torch.float64)
    h0 = leaf(4, 3, 9, device=device, dtype=torch.float64)
    actual, _ = check_against_oracle(
        ours, oracle, lambda m: m(x, h0), [x, h0], dtype=torch.float64, leaf_names=["dinput", "dh0"]
    )
    assert actual[0].dtype == actual[1].dtype == torch.float64


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "dtype", [pytest.param(torch.float16, id="float16"), pytest.param(torch.bfloat16, id="bfloat16")]
)
def test_low_precision_module_against_float64_oracle(variant, dtype, device):
    ours = tritongru.GRU(5, 17, num_layers=2, variant=variant, device=device, dtype=dtype)
    torch_gru = nn.GRU(5, 17, num_layers=2, device=device, dtype=torch.float64)
    torch_gru.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    oracle = oracle_of(variant, torch_gru)
    x = torch.randn(4, 3, 5, device=device).to(dtype)
    h0 = (0.5 * torch.randn(2, 3, 17, device=device)).to(dtype)
    x_ours, h0_ours = x.clone().requires_grad_(), h0.clone().requires_grad_()
    x_ref, h0_ref = x.double().requires_grad_(), h0.double().requires_grad_()
    output, h_n = ours(x_ours, h0_ours)
    expected, expected_h = oracle(x_ref, h0_ref)
    assert output.dtype == h_n.dtype == dtype
    assert_close(output, expected, dtype, "output")
    assert_close(h_n, expected_h, dtype, "h_n")
    actual_grads = grads([output, h_n], [x_ours, h0_ours, *ours.parameters()])
    expected_grads = grads([expected, expected_h], [x_ref, h0_ref, *oracle.parameters()])
    names = ["dinput", "dh0"] + [f"d{name}" for name, _ in ours.named_parameters()]
    for name, a, e in zip(names, actual_grads, expected_grads, strict=True):
        assert a.dtype == dtype, name
        scale = max(1.0, float(e.abs().max()))
        torch.testing.assert_close(
            a.double() / scale, e / scale, **tolerance(dtype), msg=lambda m, name=name: f"{name}: {m}"
        )


@pytest.mark.parametrize("variant", VARIANTS)
def test_allow_tf32_modules_stay_close(variant, device):
    """``allow_tf32=True``: TF32 products on the GPU (exact under the interpreter), so within TF32's error."""
    ours = tritongru.GRU(5, 17, num_layers=2, variant=variant, device=device, allow_tf32=True)
    torch_gru = nn.GRU(5, 17, num_layers=2, device=device)
    torch_gru.load_state_dict(ours.state_dict())
    cell = tritongru.GRUCell(5, 17, variant=variant, device=device, allow_tf32=True)
    torch_cell = nn.GRUCell(5, 17, device=device)
    torch_cell.load_state_dict(cell.state_dict())
    assert ours.allow_tf32 and cell.allow_tf32
    x, h0 = torch.randn(4, 3, 5, device=device), torch.randn(2, 3, 17, device=device)
    with torch.no_grad():
        output, h_n = ours(x, h0)
        expected, expected_h = oracle_of(variant, torch_gru)(x, h0)
        stepped, expected_step = cell(x[0], h0[0]), oracle_of(variant, torch_cell)(x[0], h0[0])
    tf32 = {"atol": 1e-2, "rtol": 1e-2}
    torch.testing.assert_close(output, expected, **tf32)
    torch.testing.assert_close(h_n, expected_h, **tf32)
    torch.testing.assert_close(stepped, expected_step, **tf32)


@pytest.mark.parametrize("variant", VARIANTS)
def test_module_cast_after_construction(variant, device):
    """``module.double()`` / ``.to(dtype)`` after construction: forward uses the cast parameters."""
    ours, oracle = gru_and_oracle(variant, 5, 9, num_layers=2, device=device)
    ours.double()
    oracle.double()
    x = leaf(4, 3, 5, device=device, dtype=torch.float64)
    actual, _ = check_against_oracle(ours, oracle, lambda m: m(x), [x], dtype=torch.float64, leaf_names=["dinput"])
    assert actual[0].dtype == torch.float64


@pytest.mark.parametrize("variant", VARIANTS)
def test_float16_cell_against_float64_oracle(variant, device):
    ours = tritongru.GRUCell(7, 17, variant=variant, device=device, dtype=torch.float16)
    torch_cell = nn.GRUCell(7, 17, device=device, dtype=torch.float64)
    torch_cell.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    oracle = oracle_of(variant, torch_cell)
    x, h = torch.randn(3, 7, device=device).half(), torch.randn(3, 17, device=device).half()
    with torch.no_grad():
        actual = ours(x, h)
        expected = oracle(x.double(), h.double())
    assert actual.dtype == torch.float16
    assert_close(actual, expected, torch.float16, "h'")


# -------------------------------------------------------------------------------------- torch's module surface


@pytest.mark.parametrize("config", GRU_CONFIGS)
def test_rnnbase_surface_matches_torch(config, device):
    """tritongru.GRU is an nn.RNNBase (not an nn.GRU, which dynamo refuses to trace): torch's flat-weight
    attributes are there and agree with torch.nn.GRU's, and flatten_parameters works."""
    ours = tritongru.GRU(5, 11, device=device, **config)
    theirs = nn.GRU(5, 11, device=device, **config)
    assert isinstance(ours, nn.RNNBase) and not isinstance(ours, nn.GRU)
    assert ours.mode == theirs.mode == "GRU"
    assert ours._flat_weights_names == theirs._flat_weights_names
    assert [w.shape for w in ours._flat_weights] == [w.shape for w in theirs._flat_weights]
    assert [[w.shape for w in layer] for layer in ours.all_weights] == [
        [w.shape for w in layer] for layer in theirs.all_weights
    ]
    ours.flatten_parameters()
    assert all(a is b for a, b in zip(ours._flat_weights, ours.parameters(), strict=True))
    assert isinstance(tritongru.GRUCell(5, 11, device=device), nn.GRUCell)


@pytest.mark.parametrize("variant", VARIANTS)
def test_inference_mode(variant, device):
    gru = tritongru.GRU(5, 9, num_layers=2, variant=variant, device=device)
    cell = tritongru.GRUCell(5, 9, variant=variant, device=device)
    x = torch.randn(4, 3, 5, device=device)
    with torch.no_grad():
        expected, expected_step = gru(x)[0], cell(x[0])
    with torch.inference_mode():
        output, step = gru(x)[0], cell(x[0])
    assert torch.equal(output, expected) and torch.equal(step, expected_step)
