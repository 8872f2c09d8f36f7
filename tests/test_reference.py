"""The plain-PyTorch reference, itself checked: against hand-computed steps (both formulations) and, for the
cudnn form, against torch.nn.GRU; the multi-head GRU against the dense GRU with the block-diagonal weight; the
LayerNorm-GRU against compositions of torch's layer_norm and hand-computed steps. (Zoneout: tests/test_zoneout.py.)"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from tritongru import reference
from tritongru.validation import GRUInputError
from tritongru.variants import VARIANTS


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


# One unit, one input feature: weights [W_r, W_z, W_n] and biases written out by hand.
W_IH, W_HH = [0.5, -1.0, 2.0], [1.5, 0.25, -0.75]
B_IH, B_HH = [0.1, -0.2, 0.3], [-0.4, 0.5, 0.6]


def hand_step(x: float, h: float, variant: str) -> float:
    """One step of each formulation, straight from the equations in README.md, with Python floats."""
    r = sigmoid(W_IH[0] * x + B_IH[0] + W_HH[0] * h + B_HH[0])
    z = sigmoid(W_IH[1] * x + B_IH[1] + W_HH[1] * h + B_HH[1])
    if variant == "cudnn":
        n = math.tanh(W_IH[2] * x + B_IH[2] + r * (W_HH[2] * h + B_HH[2]))
        return (1 - z) * n + z * h
    candidate = math.tanh(W_IH[2] * x + B_IH[2] + W_HH[2] * (r * h) + B_HH[2])
    return z * candidate + (1 - z) * h


def as_tensors():
    column = lambda values: torch.tensor(values, dtype=torch.float64)[:, None]
    return column(W_IH), column(W_HH), torch.tensor(B_IH, dtype=torch.float64), torch.tensor(B_HH, dtype=torch.float64)


@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_matches_hand_computed_steps(variant):
    xs, h = [0.7, -1.3, 2.1], -0.35
    expected = []
    state = h
    for x in xs:
        state = hand_step(x, state, variant)
        expected.append(state)
    output, h_n = reference.gru_layer_ref(
        torch.tensor(xs, dtype=torch.float64)[:, None, None],
        torch.tensor([[h]], dtype=torch.float64),
        *as_tensors(),
        variant=variant,
    )
    assert output.flatten().tolist() == pytest.approx(expected, abs=1e-14)
    assert h_n.item() == pytest.approx(expected[-1], abs=1e-14)


def test_formulations_differ_on_the_hand_case():
    """The hand case is not degenerate: the two formulations give different states."""
    assert abs(hand_step(0.7, -0.35, "cudnn") - hand_step(0.7, -0.35, "classic")) > 1e-3


@pytest.mark.parametrize(
    "num_layers, bidirectional, bias",
    [
        pytest.param(1, False, True, id="L1"),
        pytest.param(2, True, True, id="L2-bi"),
        pytest.param(2, False, False, id="L2-nobias"),
    ],
)
def test_reference_cudnn_matches_torch_gru(num_layers, bidirectional, bias):
    gru = torch.nn.GRU(5, 7, num_layers=num_layers, bidirectional=bidirectional, bias=bias, dtype=torch.float64)
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    h0 = torch.randn(num_layers * (2 if bidirectional else 1), 3, 7, dtype=torch.float64)
    weights = [w for layer in gru.all_weights for w in (layer if bias else [*layer, None, None])]
    output, h_n = reference.gru_ref(x, h0, weights, num_layers=num_layers, bidirectional=bidirectional)
    expected_output, expected_h_n = gru(x, h0)
    torch.testing.assert_close(output, expected_output)
    torch.testing.assert_close(h_n, expected_h_n)


def test_reference_lengths_match_packed_torch_gru():
    gru = torch.nn.GRU(4, 6, bidirectional=True, dtype=torch.float64)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    lengths = torch.tensor([2, 5, 3])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    expected_packed, expected_h_n = gru(packed)
    expected_output, _ = torch.nn.utils.rnn.pad_packed_sequence(expected_packed, total_length=5)
    weights = [w for layer in gru.all_weights for w in layer]
    output, h_n = reference.gru_ref(
        x, torch.zeros(2, 3, 6, dtype=torch.float64), weights, bidirectional=True, lengths=lengths
    )
    torch.testing.assert_close(output, expected_output)
    torch.testing.assert_close(h_n, expected_h_n)


def test_reference_rejects_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        reference.gru_cell_ref(
            torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(3, 1), torch.zeros(3, 1), variant="lstm"
        )


# ------------------------------------------------------------------------------------------------ multi-head

F64 = torch.float64


def head_weights(I: int, H: int, num_heads: int, bias: bool = True) -> list[torch.Tensor | None]:
    """One layer's ``weight_ih [3H, I], weight_hh [3H, H // num_heads], bias_ih, bias_hh`` (None without bias)."""
    d = H // num_heads
    biases = [torch.randn(3 * H, dtype=F64) for _ in range(2)] if bias else [None, None]
    return [torch.randn(3 * H, I, dtype=F64), torch.randn(3 * H, d, dtype=F64) / d**0.5, *biases]


def test_block_diagonal_layout_by_hand():
    """Row ``g*H + h*d + u`` of ``weight_hh`` holds the entries of columns ``h*d .. h*d + d - 1`` of that row of
    the dense matrix; everything else in the dense matrix is zero."""
    H, k = 6, 3
    d = H // k
    blocks = torch.randn(3 * H, d, dtype=F64)
    dense = reference.block_diagonal_weight_hh(blocks, k)
    assert dense.shape == (3 * H, H)
    for g in range(3):
        for h in range(k):
            for u in range(d):
                row = g * H + h * d + u
                for column in range(H):
                    inside = h * d <= column < (h + 1) * d
                    expected = blocks[row, column - h * d].item() if inside else 0.0
                    assert dense[row, column].item() == expected
    assert torch.equal(reference.diagonal_blocks_weight_hh(dense, k), blocks)
    assert reference.block_diagonal_weight_hh(dense, 1) is dense  # one head: the dense layout itself


HEAD_CASES = [
    pytest.param(15, 3, 6, 3, 2, True, None, id="H15-k3-T6-B3-L2-bi"),
    pytest.param(17, 17, 1, 1, 1, False, None, id="H17-k17-T1-B1"),
    pytest.param(17, 1, 4, 2, 1, True, None, id="H17-k1-bi"),
    pytest.param(12, 4, 5, 3, 2, True, [5, 2, 4], id="H12-k4-L2-bi-lengths"),
]


def dense_twin(weights: list, num_heads: int) -> list:
    """The same layer weights with every ``weight_hh`` expanded to the dense block-diagonal matrix, as new leaves."""
    twin = []
    for position, w in enumerate(weights):
        w = reference.block_diagonal_weight_hh(w, num_heads) if position % 4 == 1 else w
        twin.append(None if w is None else w.detach().clone().requires_grad_())
    return twin


def assert_gradients_match(heads_grads, dense_grads, num_heads):
    for position, (a, e) in enumerate(zip(heads_grads, dense_grads, strict=True)):
        if position % 4 == 1:  # weight_hh: the dense gradient restricted to the diagonal blocks
            e = reference.diagonal_blocks_weight_hh(e, num_heads)
        torch.testing.assert_close(a, e, msg=lambda m, position=position: f"gradient {position}: {m}")


@pytest.mark.parametrize("H, num_heads, T, B, num_layers, bidirectional, lengths", HEAD_CASES)
def test_multi_head_cudnn_equals_torch_gru_with_the_block_diagonal_weight(
    H, num_heads, T, B, num_layers, bidirectional, lengths
):
    """Forward and every gradient (input, h0, each weight) of the multi-head reference equal torch.nn.GRU's
    with ``weight_hh`` the dense block-diagonal matrix."""
    directions, I = 2 if bidirectional else 1, 4
    weights = []
    for layer in range(num_layers):
        for _ in range(directions):
            weights += head_weights(I if layer == 0 else directions * H, H, num_heads)
    weights = [w.requires_grad_() for w in weights]
    gru = torch.nn.GRU(I, H, num_layers=num_layers, bidirectional=bidirectional, dtype=F64)
    twin = dense_twin(weights, num_heads)
    with torch.no_grad():
        for parameter, w in zip(gru._flat_weights, twin, strict=True):
            parameter.copy_(w)
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    h0 = torch.randn(num_layers * directions, B, H, dtype=F64, requires_grad=True)
    output, h_n = reference.gru_ref(
        x, h0, weights, num_layers=num_layers, bidirectional=bidirectional, num_heads=num_heads, lengths=lengths
    )
    if lengths is None:
        expected_output, expected_h_n = gru(x, h0)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        expected_packed, expected_h_n = gru(packed, h0)
        expected_output, _ = torch.nn.utils.rnn.pad_packed_sequence(expected_packed, total_length=T)
    torch.testing.assert_close(output, expected_output)
    torch.testing.assert_close(h_n, expected_h_n)
    cotangents = [torch.randn_like(output), torch.randn_like(h_n)]
    ours = torch.autograd.grad([output, h_n], [x, h0, *weights], cotangents)
    theirs = torch.autograd.grad([expected_output, expected_h_n], [x, h0, *gru._flat_weights], cotangents)
    assert_gradients_match(ours[2:], theirs[2:], num_heads)
    torch.testing.assert_close(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1])


@pytest.mark.parametrize("H, num_heads, T, B, num_layers, bidirectional, lengths", HEAD_CASES)
def test_multi_head_classic_equals_the_classic_reference_with_the_block_diagonal_weight(
    H, num_heads, T, B, num_layers, bidirectional, lengths
):
    """Classic: ``W_hn (R * h)`` is per head too; the dense reference given the block-diagonal matrix agrees,
    forward and every gradient."""
    directions, I = 2 if bidirectional else 1, 3
    weights = []
    for layer in range(num_layers):
        for _ in range(directions):
            weights += head_weights(I if layer == 0 else directions * H, H, num_heads, bias=layer == 0)
    weights = [w if w is None else w.requires_grad_() for w in weights]
    twin = dense_twin(weights, num_heads)
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    options = dict(num_layers=num_layers, bidirectional=bidirectional, lengths=lengths, variant="classic")
    output, h_n = reference.gru_ref(x, None, weights, num_heads=num_heads, **options)
    expected_output, expected_h_n = reference.gru_ref(x, None, twin, **options)
    torch.testing.assert_close(output, expected_output)
    torch.testing.assert_close(h_n, expected_h_n)
    cotangents = [torch.randn_like(output), torch.randn_like(h_n)]
    present = [i for i, w in enumerate(weights) if w is not None]
    ours = torch.autograd.grad([output, h_n], [x, *(weights[i] for i in present)], cotangents)
    theirs = torch.autograd.grad([expected_output, expected_h_n], [x, *(twin[i] for i in present)], cotangents)
    torch.testing.assert_close(ours[0], theirs[0])
    for i, a, e in zip(present, ours[1:], theirs[1:], strict=True):
        e = reference.diagonal_blocks_weight_hh(e, num_heads) if i % 4 == 1 else e
        torch.testing.assert_close(a, e, msg=lambda m, i=i: f"weight {i}: {m}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_multi_head_cell_equals_the_dense_cell(variant):
    """Batched and unbatched, hx given and None; cudnn also against torch.nn.GRUCell."""
    I, H, k = 5, 9, 3
    weights = head_weights(I, H, k)
    dense = [weights[0], reference.block_diagonal_weight_hh(weights[1], k), *weights[2:]]
    for x, hx in ((torch.randn(4, I, dtype=F64), torch.randn(4, H, dtype=F64)), (torch.randn(I, dtype=F64), None)):
        actual = reference.gru_cell_ref(x, hx, *weights, variant=variant, num_heads=k)
        torch.testing.assert_close(actual, reference.gru_cell_ref(x, hx, *dense, variant=variant))
        if variant == "cudnn":
            cell = torch.nn.GRUCell(I, H, dtype=F64)
            with torch.no_grad():
                for parameter, w in zip(cell.parameters(), dense, strict=True):
                    parameter.copy_(w)
            torch.testing.assert_close(actual, cell(x, hx))


def test_heads_do_not_see_each_other():
    """Changing head 1's part of h0 changes no other head's units at any step (cudnn and classic)."""
    T, B, I, H, k = 4, 2, 3, 12, 3
    weights, x, h0 = head_weights(I, H, k), torch.randn(T, B, I, dtype=F64), torch.randn(B, H, dtype=F64)
    other = h0.clone()
    other[:, 4:8] += 1.0
    for variant in VARIANTS:
        a, _ = reference.gru_layer_ref(x, h0, *weights, variant=variant, num_heads=k)
        b, _ = reference.gru_layer_ref(x, other, *weights, variant=variant, num_heads=k)
        assert torch.equal(a[..., :4], b[..., :4]) and torch.equal(a[..., 8:], b[..., 8:])
        assert not torch.allclose(a[..., 4:8], b[..., 4:8])


def test_heads_and_weight_shapes_are_checked():
    x = torch.randn(2, 3, 4, dtype=F64)
    with pytest.raises(GRUInputError, match=r"num_heads must be a positive int that divides hidden_size=12.*got 5"):
        reference.gru_layer_ref(x, None, *head_weights(4, 12, 4), num_heads=5)
    with pytest.raises(GRUInputError, match=r"hidden_size // num_heads\) with num_heads=3; got \(36, 12\)"):
        reference.gru_layer_ref(x, None, *head_weights(4, 12, 1), num_heads=3)
    with pytest.raises(GRUInputError, match=r"num_heads=1; got \(36, 4\)"):
        reference.gru_cell_ref(x[0], None, *head_weights(4, 12, 3))


@pytest.mark.parametrize("variant", VARIANTS)
def test_multi_head_gradcheck_and_gradgradcheck(variant):
    T, B, I, H, k = 2, 2, 2, 4, 2
    weights = [w.requires_grad_() for w in head_weights(I, H, k)]
    x, h0 = torch.randn(T, B, I, dtype=F64, requires_grad=True), torch.randn(B, H, dtype=F64, requires_grad=True)
    run = lambda x, h0, *weights: reference.gru_layer_ref(x, h0, *weights, variant=variant, num_heads=k)
    assert gradcheck(run, (x, h0, *weights))
    assert gradgradcheck(run, (x, h0, *weights), fast_mode=True)


# -------------------------------------------------------------------------------------------- LayerNorm-GRU


def test_layer_norm_of_each_group_has_zero_mean_and_unit_variance():
    """With gain 1 and bias 0, each group comes out with mean 0 and biased variance ``v / (v + eps)`` (1 up to
    eps), and equals torch's layer_norm of that group."""
    groups, size = 6, 17
    pre = torch.randn(5, groups * size, dtype=F64) * 3 + 2
    ones, zeros = torch.ones(groups * size, dtype=F64), torch.zeros(groups * size, dtype=F64)
    normalised = reference.layer_norm_ref(pre, ones, zeros, groups=groups).view(5, groups, size)
    variance = pre.view(5, groups, size).var(-1, unbiased=False)
    torch.testing.assert_close(normalised.mean(-1), torch.zeros(5, groups, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(normalised.var(-1, unbiased=False), variance / (variance + 1e-5))
    torch.testing.assert_close(normalised.var(-1, unbiased=False), torch.ones(5, groups, dtype=F64), atol=1e-4, rtol=0)
    torch.testing.assert_close(normalised, F.layer_norm(pre.view(5, groups, size), (size,), eps=1e-5))


def ln_weights(I: int, H: int, num_heads: int = 1) -> list[torch.Tensor]:
    """``weight_ih, weight_hh, ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias`` of one layer."""
    d = H // num_heads
    gains = [1 + 0.3 * torch.randn(3 * H, dtype=F64), 1 + 0.3 * torch.randn(3 * H, dtype=F64)]
    return [
        torch.randn(3 * H, I, dtype=F64),
        torch.randn(3 * H, d, dtype=F64) / d**0.5,
        gains[0],
        0.3 * torch.randn(3 * H, dtype=F64),
        gains[1],
        0.3 * torch.randn(3 * H, dtype=F64),
    ]


def ln_cell_by_composition(x, h, weights, variant, num_heads):
    """The LayerNorm-GRU step composed from torch's layer_norm, one gate (and head) at a time, with the dense
    block-diagonal recurrent weight."""
    w_ih, w_hh, g_i, b_i, g_h, b_h = weights
    H = w_hh.shape[0] // 3
    dense = reference.block_diagonal_weight_hh(w_hh, num_heads)
    d = H // num_heads

    def ln(v, gain, bias):
        heads = F.layer_norm(v.unflatten(-1, (num_heads, d)), (d,), eps=1e-5).flatten(-2)
        return heads * gain + bias

    gate = lambda i: slice(i * H, (i + 1) * H)
    i_side = [ln(x @ w_ih[gate(i)].T, g_i[gate(i)], b_i[gate(i)]) for i in range(3)]
    h_side = lambda i, v: ln(v @ dense[gate(i)].T, g_h[gate(i)], b_h[gate(i)])
    r = torch.sigmoid(i_side[0] + h_side(0, h))
    z = torch.sigmoid(i_side[1] + h_side(1, h))
    if variant == "cudnn":
        return (1 - z) * torch.tanh(i_side[2] + r * h_side(2, h)) + z * h
    return z * torch.tanh(i_side[2] + h_side(2, r * h)) + (1 - z) * h


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("num_heads", [1, 3])
def test_layernorm_cell_equals_a_composition_of_torch_layer_norms(variant, num_heads):
    I, H = 5, 15
    weights = ln_weights(I, H, num_heads)
    for x, hx in (
        (torch.randn(3, I, dtype=F64), torch.randn(3, H, dtype=F64)),
        (torch.randn(1, I, dtype=F64), torch.randn(1, H, dtype=F64)),
        (torch.randn(I, dtype=F64), torch.randn(H, dtype=F64)),
    ):
        actual = reference.layernorm_gru_cell_ref(x, hx, *weights, variant=variant, num_heads=num_heads)
        torch.testing.assert_close(actual, ln_cell_by_composition(x, hx, weights, variant, num_heads))
    x = torch.randn(2, I, dtype=F64)
    torch.testing.assert_close(
        reference.layernorm_gru_cell_ref(x, None, *weights, variant=variant, num_heads=num_heads),
        ln_cell_by_composition(x, torch.zeros(2, H, dtype=F64), weights, variant, num_heads),
    )


def ln_stack_by_composition(x, hx, weights, variant, num_heads, num_layers, lengths):
    """A bidirectional LayerNorm-GRU stack, one sequence at a time (each cut to its length, the reverse
    direction run on the flipped sequence), from :func:`ln_cell_by_composition`."""
    T, B = x.shape[:2]
    H = weights[1].shape[0] // 3
    output, h_n = torch.zeros(T, B, 2 * H, dtype=F64), torch.zeros(2 * num_layers, B, H, dtype=F64)
    for b in range(B):
        sequence = x[: lengths[b], b]
        for layer in range(num_layers):
            halves = []
            for direction in range(2):
                index = 2 * layer + direction
                h, states = hx[index, b], []
                for x_t in sequence.flip(0) if direction else sequence:
                    h = ln_cell_by_composition(x_t, h, weights[6 * index : 6 * index + 6], variant, num_heads)
                    states.append(h)
                h_n[index, b] = h
                halves.append(torch.stack(states).flip(0) if direction else torch.stack(states))
            sequence = torch.cat(halves, dim=-1)
        output[: lengths[b], b] = sequence
    return output, h_n


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("num_heads", [1, 2])
def test_layernorm_stack_equals_the_composition(variant, num_heads):
    T, B, I, H, L, lengths = 4, 3, 3, 6, 2, [4, 1, 3]
    weights = [w for layer in range(L) for _ in range(2) for w in ln_weights(I if layer == 0 else 2 * H, H, num_heads)]
    x, hx = torch.randn(B, T, I, dtype=F64), torch.randn(2 * L, B, H, dtype=F64)
    output, h_n = reference.layernorm_gru_ref(
        x,
        hx,
        weights,
        num_layers=L,
        bidirectional=True,
        batch_first=True,
        variant=variant,
        num_heads=num_heads,
        lengths=lengths,
    )
    expected_output, expected_h_n = ln_stack_by_composition(
        x.transpose(0, 1), hx, weights, variant, num_heads, L, lengths
    )
    torch.testing.assert_close(output, expected_output.transpose(0, 1))
    torch.testing.assert_close(h_n, expected_h_n)


def layer_norm_by_hand(values: list[float], gains: list[float], biases: list[float]) -> list[float]:
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / len(values)
    return [(v - mean) / math.sqrt(variance + 1e-5) * g + b for v, g, b in zip(values, gains, biases, strict=True)]


# Two units, one input feature: W_ih, W_hh rows per gate and the LN gains/biases written out by hand.
LN_W_IH = [[0.5, -1.0], [2.0, 0.3], [-0.7, 1.1]]  # per gate: the two units' input weights
LN_W_HH = [[[1.5, 0.2], [-0.4, 0.8]], [[0.25, -1.2], [0.6, 0.1]], [[-0.75, 0.9], [1.3, -0.5]]]
LN_GAIN_I, LN_BIAS_I = [[1.2, 0.8], [0.9, 1.1], [1.0, 0.7]], [[0.1, -0.2], [0.3, 0.0], [-0.1, 0.2]]
LN_GAIN_H, LN_BIAS_H = [[0.6, 1.4], [1.0, 0.5], [0.8, 1.3]], [[0.0, 0.2], [-0.3, 0.1], [0.4, -0.2]]


def ln_hand_step(x: float, h: list[float], variant: str) -> list[float]:
    matvec = lambda rows, v: [sum(w * e for w, e in zip(row, v, strict=True)) for row in rows]
    i_side = [layer_norm_by_hand([w * x for w in LN_W_IH[g]], LN_GAIN_I[g], LN_BIAS_I[g]) for g in range(3)]
    h_side = lambda g, v: layer_norm_by_hand(matvec(LN_W_HH[g], v), LN_GAIN_H[g], LN_BIAS_H[g])
    r = [sigmoid(a + b) for a, b in zip(i_side[0], h_side(0, h), strict=True)]
    z = [sigmoid(a + b) for a, b in zip(i_side[1], h_side(1, h), strict=True)]
    if variant == "cudnn":
        n = [math.tanh(a + ri * b) for a, ri, b in zip(i_side[2], r, h_side(2, h), strict=True)]
        return [(1 - zi) * ni + zi * hi for zi, ni, hi in zip(z, n, h, strict=True)]
    reset = [ri * hi for ri, hi in zip(r, h, strict=True)]
    candidate = [math.tanh(a + b) for a, b in zip(i_side[2], h_side(2, reset), strict=True)]
    return [zi * ci + (1 - zi) * hi for zi, ci, hi in zip(z, candidate, h, strict=True)]


@pytest.mark.parametrize("variant", VARIANTS)
def test_layernorm_reference_matches_hand_computed_steps(variant):
    xs, h = [0.7, -1.3, 2.1], [-0.35, 0.6]
    expected, state = [], h
    for x in xs:
        state = ln_hand_step(x, state, variant)
        expected.append(state)
    flat = lambda nested: torch.tensor(nested, dtype=F64).flatten()
    weights = [
        torch.tensor(LN_W_IH, dtype=F64).reshape(6, 1),
        torch.tensor(LN_W_HH, dtype=F64).reshape(6, 2),
        flat(LN_GAIN_I),
        flat(LN_BIAS_I),
        flat(LN_GAIN_H),
        flat(LN_BIAS_H),
    ]
    output, h_n = reference.layernorm_gru_layer_ref(
        torch.tensor(xs, dtype=F64)[:, None, None], torch.tensor([h], dtype=F64), *weights, variant=variant
    )
    assert output[:, 0].tolist() == [pytest.approx(step, abs=1e-12) for step in expected]
    assert h_n[0].tolist() == pytest.approx(expected[-1], abs=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "num_heads, zoneout",
    [pytest.param(1, 0.0, id="k1"), pytest.param(2, 0.0, id="k2"), pytest.param(2, 0.5, id="k2-zoneout")],
)
def test_layernorm_gradcheck_and_gradgradcheck(variant, num_heads, zoneout):
    T, B, I, H = 2, 2, 2, 4
    weights = [w.requires_grad_() for w in ln_weights(I, H, num_heads)]
    x, h0 = torch.randn(T, B, I, dtype=F64, requires_grad=True), torch.randn(B, H, dtype=F64, requires_grad=True)

    def run(x, h0, *weights):
        return reference.layernorm_gru_layer_ref(
            x, h0, *weights, variant=variant, num_heads=num_heads, zoneout=zoneout, zoneout_seed=5, training=True
        )

    assert gradcheck(run, (x, h0, *weights))
    assert gradgradcheck(run, (x, h0, *weights), fast_mode=True)
    cell = lambda x, h0, *weights: reference.layernorm_gru_cell_ref(
        x, h0, *weights, variant=variant, num_heads=num_heads
    )
    assert gradcheck(cell, (x[0], h0, *weights))
