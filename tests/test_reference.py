"""The plain-PyTorch reference, itself checked: against hand-computed steps (both formulations) and, for the
cudnn form, against torch.nn.GRU."""

from __future__ import annotations

import math

import pytest
import torch

from tritongru import reference
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
