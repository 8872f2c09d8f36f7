"""tritongru inside the machinery research models use: ``torch.compile`` (``fullgraph=True``, dynamo's default
configuration, ``aot_eager`` and inductor, forward and backward, no graph break), ``torch.export``, TorchScript
(refused with a way forward), ``torch.autocast`` (torch's output dtypes and mixed-dtype acceptance), Python
threads, CUDA streams and CUDA-graph capture, and a ``TRITON_INTERPRET`` set too late."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
from helpers import ON_GPU, assert_close
from torch import nn

import tritongru

VARIANTS = [pytest.param(variant, id=variant) for variant in tritongru.VARIANTS]
NEEDS_GPU = pytest.mark.skipif(not ON_GPU, reason="CUDA streams, CUDA graphs and CUDA autocast need a GPU")


class Model(nn.Module):
    """What a research model looks like around a GRU: a projection, a 2-layer bidirectional batch-first GRU, a
    cell stepping on its last output, a head."""

    def __init__(self, variant: str, device) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 4, device=device)
        self.gru = tritongru.GRU(
            4, 5, num_layers=2, batch_first=True, bidirectional=True, variant=variant, device=device
        )
        self.cell = tritongru.GRUCell(10, 5, variant=variant, device=device)
        self.head = nn.Linear(5, 2, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, h_n = self.gru(self.embed(x))
        return self.head(self.cell(output[:, -1], h_n[-1]))


def forward_and_grads(model, run, x):
    model.zero_grad()
    y = run(x)
    y.pow(2).sum().backward()
    return [y.detach()] + [p.grad.clone() for p in model.parameters()]


def assert_same_run(actual, expected):
    for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert_close(a, e, torch.float32, "output" if index == 0 else f"gradient {index - 1}")


# ---------------------------------------------------------------------------------------------- torch.compile


@pytest.mark.parametrize("variant", VARIANTS)
def test_compile_fullgraph_aot_eager(variant, device):
    """Dynamo's default configuration (``allow_rnn`` off): tritongru.GRU is an ``nn.RNNBase`` but not an
    ``nn.GRU``, so dynamo traces it; the custom ops are single graph nodes."""
    assert not torch._dynamo.config.allow_rnn
    torch._dynamo.reset()
    model = Model(variant, device)
    x = torch.randn(2, 3, 3, device=device)
    expected = forward_and_grads(model, model, x)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    assert_same_run(forward_and_grads(model, compiled, x), expected)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


def test_compile_fullgraph_inductor(device):
    torch._dynamo.reset()
    model = tritongru.GRU(3, 4, num_layers=2, device=device)
    run = lambda x: model(x)[0].sum(-1)
    x = torch.randn(3, 2, 3, device=device)
    expected = forward_and_grads(model, run, x)
    compiled = torch.compile(run, backend="inductor", fullgraph=True)
    assert_same_run(forward_and_grads(model, compiled, x), expected)


def test_compile_functional_with_lengths(device):
    """Padded input with per-sequence lengths compiles (a PackedSequence does not under ``fullgraph``: dynamo
    skips torch's own pack/pad helpers, for torch.nn.GRU too)."""
    torch._dynamo.reset()
    weights = list(tritongru.GRU(3, 4, device=device).parameters())
    lengths = torch.tensor([3, 1], device=device)
    run = lambda x: tritongru.gru(x, None, weights, lengths=lengths)[0]
    x = torch.randn(3, 2, 3, device=device)
    compiled = torch.compile(run, backend="aot_eager", fullgraph=True)
    assert_close(compiled(x), run(x), torch.float32, "output")


# --------------------------------------------------------------------------------------------------- export


@pytest.mark.parametrize("variant", VARIANTS)
def test_export_runs_the_custom_ops(variant, device):
    model = Model(variant, device).eval()
    x = torch.randn(2, 3, 3, device=device)
    program = torch.export.export(model, (x,))
    code = program.graph_module.code
    assert "torch.ops.tritongru.gru_layer" in code and "torch.ops.tritongru.gru_cell" in code
    other = torch.randn(2, 3, 3, device=device)
    with torch.no_grad():
        assert_close(program.module()(other), model(other), torch.float32, "exported program")


# ---------------------------------------------------------------------------------------------- TorchScript


def test_jit_script_is_refused_with_a_way_forward(device):
    wrapper = nn.Sequential(tritongru.GRUCell(3, 4, device=device))
    for module in (tritongru.GRU(3, 4, device=device), wrapper):
        with pytest.raises(RuntimeError, match=r"not supported by torch\.jit\.script.*torch\.compile"):
            torch.jit.script(module)


def test_jit_trace_is_refused_with_a_way_forward(device):
    with pytest.raises(RuntimeError, match=r"torch\.jit\.trace is not supported.*torch\.export"):
        torch.jit.trace(tritongru.GRU(3, 4, device=device), (torch.randn(2, 1, 3, device=device),))


# --------------------------------------------------------------------------------------------------- autocast

MODULE_DTYPES = [torch.float32, torch.bfloat16]
INPUT_DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
STATE_DTYPES = [None, torch.float32, torch.bfloat16, torch.float64]


def outcome(run, *args):
    """The output dtype(s) of ``run(*args)``, or the exception it raised."""
    try:
        result = run(*args)
    except (RuntimeError, ValueError, TypeError) as error:
        return error
    return tuple(t.dtype for t in result) if isinstance(result, tuple) else result.dtype


def assert_same_outcome(ours, theirs, args, case):
    """Same dtypes from ``ours(*args)`` and ``theirs(*args)``, or both raise and ours is catchable as torch's
    exception is."""
    ours, theirs = outcome(ours, *args), outcome(theirs, *args)
    if isinstance(theirs, Exception):
        assert isinstance(ours, type(theirs)), f"{case}: torch raised {theirs!r}, tritongru gave {ours!r}"
    else:
        assert ours == theirs, case


@pytest.mark.skipif(ON_GPU, reason="the CPU autocast rule; CUDA's is test_autocast_cuda_like_torch")
def test_autocast_cpu_dtypes_like_torch(device):
    """Every combination of module, input and state dtype under ``torch.autocast("cpu", bfloat16)``: the same
    output dtypes as torch.nn.GRU/GRUCell (torch accepts mixed dtypes there), or an error where torch errs
    (float64 mixed with anything else), catchable as torch's."""
    for module_dtype in MODULE_DTYPES:
        ours, theirs = tritongru.GRU(3, 4, dtype=module_dtype), nn.GRU(3, 4, dtype=module_dtype)
        ours_cell, their_cell = tritongru.GRUCell(3, 4, dtype=module_dtype), nn.GRUCell(3, 4, dtype=module_dtype)
        for input_dtype in INPUT_DTYPES:
            for state_dtype in STATE_DTYPES:
                x = torch.randn(2, 1, 3).to(input_dtype)
                hx = torch.randn(1, 1, 4).to(state_dtype) if state_dtype else None
                case = f"module {module_dtype}, input {input_dtype}, state {state_dtype}"
                step = hx[0] if hx is not None else None
                with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
                    assert_same_outcome(ours, theirs, (x, hx), case)
                    assert_same_outcome(ours_cell, their_cell, (x[0], step), f"cell: {case}")


@pytest.mark.skipif(ON_GPU, reason="the CPU autocast rule; CUDA's is test_autocast_cuda_like_torch")
@pytest.mark.parametrize("variant", VARIANTS)
def test_autocast_cpu_linear_into_float32_gru_trains(variant, device):
    """The issue's case: a Linear under autocast hands a bfloat16 activation to a float32 GRU. Output as
    torch's (bfloat16, close to it), and float32 gradients reach the GRU's parameters."""
    embed = nn.Linear(3, 4)
    ours = tritongru.GRU(4, 5, variant=variant)
    oracle = nn.GRU(4, 5) if variant == "cudnn" else None
    x = torch.randn(3, 2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, h_n = ours(embed(x))
        if oracle is not None:
            oracle.load_state_dict(ours.state_dict())
            expected, _ = oracle(embed(x))
            assert_close(output, expected, torch.bfloat16, "output")
    assert output.dtype == h_n.dtype == torch.bfloat16
    output.float().sum().backward()
    for name, p in ours.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and p.grad.abs().sum() > 0, name


@NEEDS_GPU
@pytest.mark.parametrize("autocast_dtype", [torch.float16, torch.bfloat16], ids=str)
def test_autocast_cuda_like_torch(autocast_dtype, device):
    """Under CUDA autocast torch.nn.GRU runs cuDNN's autocast wrapper and GRUCell is on the lower-precision
    list: tritongru gives the dtypes torch gives, values within that dtype's tolerance."""
    ours, theirs = tritongru.GRU(3, 4, device=device), nn.GRU(3, 4, device=device)
    theirs.load_state_dict(ours.state_dict())
    ours_cell, their_cell = tritongru.GRUCell(3, 4, device=device), nn.GRUCell(3, 4, device=device)
    their_cell.load_state_dict(ours_cell.state_dict())
    x = torch.randn(2, 3, 3, device=device)
    with torch.autocast("cuda", dtype=autocast_dtype), torch.no_grad():
        for name, a, e in (("gru", ours(x)[0], theirs(x)[0]), ("cell", ours_cell(x[0]), their_cell(x[0]))):
            assert a.dtype == e.dtype, name
            assert_close(a, e, e.dtype, name)


# --------------------------------------------------------------------------------- threads, streams, graphs


def test_concurrent_python_threads(device):
    """Four threads calling one module (forward and backward) at once: each result is the serial one. Under
    Triton's interpreter the launches are serialised by a lock."""
    model = tritongru.GRU(3, 4, device=device)
    x = torch.randn(3, 2, 3, device=device, requires_grad=True)
    expected = model(x)[0].detach()
    results, errors = [], []

    def work():
        try:
            for _ in range(2):
                output = model(x)[0]
                torch.autograd.grad(output.sum(), x)
                results.append(output.detach())
        except Exception as error:  # collected and reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(results) == 8
    assert all(torch.equal(result, expected) for result in results)


@NEEDS_GPU
def test_concurrent_cuda_streams(device):
    model = tritongru.GRU(16, 32, num_layers=2, device=device)
    inputs = [torch.randn(20, 8, 16, device=device) for _ in range(4)]
    with torch.no_grad():
        expected = [model(x)[0] for x in inputs]
        streams = [torch.cuda.Stream() for _ in inputs]
        torch.cuda.synchronize()
        outputs = []
        for stream, x in zip(streams, inputs, strict=True):
            with torch.cuda.stream(stream):
                outputs.append(model(x)[0])
        torch.cuda.synchronize()
    for index, (a, e) in enumerate(zip(outputs, expected, strict=True)):
        assert torch.equal(a, e), f"stream {index}"


@NEEDS_GPU
def test_cuda_graph_captures_a_training_step(device):
    """No host synchronisation and no file access on the tensor path: a forward and backward replay."""
    model = tritongru.GRU(16, 32, num_layers=2, device=device)
    static_x = torch.randn(10, 4, 16, device=device)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up compiles the kernels outside the capture
            model.zero_grad(set_to_none=True)
            model(static_x)[0].pow(2).sum().backward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    model.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = model(static_x)[0].pow(2).sum()
        static_loss.backward()
    new_x = torch.randn_like(static_x)
    static_x.copy_(new_x)
    graph.replay()
    torch.cuda.synchronize()
    replayed = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    eager_loss = model(new_x)[0].pow(2).sum()
    eager_loss.backward()
    assert_close(static_loss, eager_loss, torch.float32, "loss")
    for index, (a, p) in enumerate(zip(replayed, model.parameters(), strict=True)):
        assert_close(a, p.grad, torch.float32, f"gradient {index}")


# ----------------------------------------------------------------------------------------- TRITON_INTERPRET


def test_late_triton_interpret_says_what_to_do():
    """``TRITON_INTERPRET=1`` set after tritongru was imported cannot take effect (Triton picks its interpreter
    when the kernels are defined): the error says so and what to do, instead of Triton's "0 active drivers"."""
    script = textwrap.dedent(
        """
        import os
        import torch
        import tritongru
        os.environ["TRITON_INTERPRET"] = "1"
        try:
            tritongru.GRU(2, 3)(torch.randn(2, 1, 2))
        except ValueError as error:
            print(error)
        """
    )
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "set after tritongru was imported" in result.stdout
    assert "before importing tritongru or triton" in result.stdout
