"""Offsets past 2^31 elements: a sequence's step offset ``t * B * 3H`` passes int32 at sizes people train at
(T=4096, B=256, H=1024). The kernels form every step offset in int64; shown twice: on the compiled code (no
32-bit multiply of the step index in any kernel's IR) and by running the last step of a sequence whose arrays
pass 2^31 elements through the interpreter (the arrays, up to 13 GB, are reserved, not touched: only that
step's pages are ever written)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tritongru.variants import VARIANTS

_VALUE = r"%[\w.#]+"
_FOLLOW = ("arith.addi", "arith.subi", "arith.minsi", "arith.maxsi", "arith.muli", "tt.splat", "tt.broadcast")
_FOLLOW += ("tt.expand_dims", "arith.extsi")


def _resolved(ttir: str) -> list[tuple[str, str, list[str], bool, str]]:
    """``(value, op, operands, 32-bit result, line)`` of every definition in ``ttir``, each value and operand
    renamed to be unique: MLIR reuses a name in sibling regions (two loops' bodies), so a name is looked up in
    the regions that enclose its use. Loop induction variables are definitions with op ``scf.for``."""
    scopes: list[dict[str, str]] = [{}]
    found = []

    def define(name: str) -> str:
        unique = f"{name}@{len(found)}"
        scopes[-1][name] = unique
        return unique

    def resolve(name: str) -> str:
        return next((scope[name] for scope in reversed(scopes) if name in scope), name)

    for raw in ttir.splitlines():
        line = raw.split(" loc(")[0].strip()
        loop = re.match(rf"(?:{_VALUE}(?::\d+)? = )?scf\.for ({_VALUE}) = (.*)\{{$", line)
        if loop:
            scopes.append({})
            found.append((define(loop.group(1)), "scf.for", [], False, line))
            continue
        match = re.match(rf"({_VALUE})(?::\d+)? = ([\w.]+) (.*)$", line)
        if match:
            name, op, rest = match.groups()
            operands = [resolve(value) for value in re.findall(_VALUE, rest.split(" : ")[0])]
            is_32 = bool(re.search(r"(: i32$|: i32,|xi32[,>])", rest)) and op != "arith.extsi"
            found.append((define(name), op, operands, is_32, line))
        scopes.extend({} for _ in range(line.count("{") - line.count("}")))
        for _ in range(line.count("}") - line.count("{")):
            if len(scopes) > 1:
                scopes.pop()
    return found


def narrow_step_offsets(ttir: str) -> list[str]:
    """The pointer offsets in ``ttir`` that hold a 32-bit product of an outermost loop's induction variable
    (the step index; loops inside it run over K < H or over batch blocks): each would wrap past 2^31. Values
    are followed through integer arithmetic, splats and broadcasts, and a widening of a 32-bit product stays
    narrow (it widens what already wrapped)."""
    definitions = _resolved(ttir)
    loops = re.findall(rf"^( *)(?:{_VALUE}(?::\d+)? = )?scf\.for ({_VALUE}) = ", ttir, flags=re.MULTILINE)
    outermost = min((len(indent) for indent, _ in loops), default=0)
    depth_of = [len(indent) for indent, _ in loops]
    induction = [name for name, op, *_ in definitions if op == "scf.for"]
    step = {name for name, depth in zip(induction, depth_of, strict=True) if depth == outermost}
    narrow: set[str] = set()
    for _ in range(len(definitions)):
        grew = False
        for name, op, operands, is_32, _line in definitions:
            if op in _FOLLOW and step.intersection(operands) and name not in step:
                step.add(name)
                grew = True
            if op == "arith.muli" and is_32 and step.intersection(operands) and name not in narrow:
                narrow.add(name)
                grew = True
            if op in _FOLLOW and narrow.intersection(operands) and name not in narrow:
                narrow.add(name)
                grew = True
        if not grew:
            break
    return [line for _, op, operands, _, line in definitions if op == "tt.addptr" and narrow.intersection(operands[1:])]


def test_narrow_step_offsets_finds_a_32_bit_step_offset():
    """The reading has teeth: the offset ``(t - 1) * B`` in int32 is found, also once widened; its int64 form,
    and a 32-bit product of the step that is not an offset (a barrier's target count), are not."""
    narrow = (
        "%state:2 = scf.for %t = %lo to %hi step %c1 iter_args(%h = %h0) -> (tensor<16xf32>) : i32 {\n"
        "  scf.for %k = %c0 to %K step %c64 : i32 {\n"
        "    %wk = arith.muli %k, %H : i32\n"
        "    %pw = tt.addptr %w, %wk : !tt.ptr<bf16>, i32\n"
        "  %prev = arith.subi %t, %c1_i32 : i32\n"
        "  %off = arith.muli %prev, %B : i32 loc(#loc3)\n"
        "  %count = arith.muli %n, %prev : i32\n"
        "  %p = tt.addptr %hs, %off : !tt.ptr<bf16>, i32\n"
    )
    assert narrow_step_offsets(narrow) == ["%p = tt.addptr %hs, %off : !tt.ptr<bf16>, i32"]
    widened = narrow + "  %w = arith.extsi %off : i32 to i64\n  %q = tt.addptr %gi, %w : !tt.ptr<bf16>, i64\n"
    assert len(narrow_step_offsets(widened)) == 2
    wide = (
        "scf.for %t = %lo to %hi step %c1 iter_args() -> () : i32 {\n"
        "  %w = arith.extsi %t : i32 to i64\n"
        "  %off = arith.muli %w, %B : i64\n"
        "  %count = arith.muli %n, %t : i32\n"
        "  %p = tt.addptr %hs, %off : !tt.ptr<bf16>, i64\n"
    )
    assert narrow_step_offsets(wide) == []


TTIR = """
import sys
import triton
from triton.backends.compiler import GPUTarget
from tritongru import launchers
from tritongru.compiled import specialise
from tritongru.configs import KernelConfig

kernel, variant, persistent = sys.argv[1], sys.argv[2], sys.argv[3] == "persistent"
config = KernelConfig(16, 16, 128, num_warps=8, persistent=persistent, split_k=True)
flags = {"bias": True, "lengths": True} | ({"store_gates": True} if kernel == "forward" else {})
kind, args = launchers.meta_arguments(kernel, variant, "bf16", 16, 256, 64, flags, config)
jit = launchers.gru_forward_kernel if kind == "forward" else launchers.gru_backward_kernel
for mode, call in launchers.compiled_calls(kind, variant, config, 16, 256, args, 90):
    source, options = specialise(jit, call)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
    print("=== " + mode)
    print(compiled.asm["ttir"])
"""


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kernel", ["forward", "backward"])
def test_no_kernel_multiplies_its_step_index_in_32_bits(kernel, variant):
    """Every launch mode of both kernels (grid-synchronised, and each phase of the per-step fallback)."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    command = [sys.executable, "-c", TTIR, kernel, variant, "persistent"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    modules = done.stdout.split("=== ")[1:]
    assert len(modules) >= 2, "the grid-synchronised kernel and its per-step fallback"
    for module in modules:
        mode = module.splitlines()[0]
        assert "scf.for" in module, mode
        assert narrow_step_offsets(module) == [], mode


LAST_STEP = """
import os, sys
os.environ["TRITON_INTERPRET"] = "1"
import torch
from tritongru import launchers
from tritongru.configs import KernelConfig

kind, variant = sys.argv[1], sys.argv[2]
B, H, dtype = 16, 16, torch.float16
# the narrowest step offset passes 2^31: the forward's hs (t * B * H), the backward's gate gradients (t * B * 3H)
T = 2**31 // (B * H * (1 if kind == "forward" else 3)) + 3
config = KernelConfig(16, 16, 16, num_warps=1, persistent=False)
plan = launchers.plan_launch(config, B, H, torch.device("cpu"))
torch.manual_seed(0)
w_hh = (torch.randn(3 * H, H) * H**-0.5).to(dtype)
b_hh = (torch.randn(3 * H) * 0.1).to(dtype)
h_prev = torch.randn(B, H).to(dtype)
gi_last = torch.randn(1, B, 3 * H).to(dtype)
# the same step at t = 0, on arrays of one step
hs_small, h_small, gates_small = launchers.forward_sequence(
    gi_last, h_prev, w_hh, b_hh, variant=variant, store_gates=kind == "backward", config=config
)


def reserved(*shape, last=None):
    # T steps reserved (never touched but for the pages of the step written here)
    array = torch.empty(shape, dtype=dtype)
    if last is not None:
        array[T - 1] = last
    return array


if kind == "forward":
    args, _ = launchers.forward_arguments(
        gi=gi_last, x=None, w_ih=None, b_ih=None, h0=h_prev, w_hh=w_hh, b_hh=b_hh, steps=1, lengths=None,
        variant=variant, store_gates=False, allow_tf32=False, config=config,
    )
    args.update(gi_ptr=reserved(T, B, 3 * H, last=gi_last[0]), hs_ptr=reserved(T + 1, B, H, last=h_prev))
    kernel = launchers.gru_forward_kernel
else:
    grad_last = torch.randn(1, B, H).to(dtype)
    small = launchers.backward_sequence(grad_last, None, hs_small, gates_small, w_hh, variant=variant, config=config)
    args, _ = launchers.backward_arguments(
        grad_output=grad_last, grad_h_n=None, hs=hs_small, gates=gates_small, w_hh=w_hh, variant=variant,
        lengths=None, allow_tf32=False, config=config,
    )
    args.update(
        grad_out_ptr=reserved(T, B, H, last=grad_last[0]),
        hs_ptr=reserved(T + 1, B, H, last=h_prev),
        gates_ptr=reserved(T, B, gates_small.shape[-1], last=gates_small[0]),
        dgates_x_ptr=reserved(T, B, 3 * H),
        dgates_hn_ptr=reserved(T, B, H) if variant == "cudnn" else None,
    )
    kernel = launchers.gru_backward_kernel
for call in launchers.kernel_calls(kind, variant, plan, 1, args):
    call.update(t_lo=T - 1, t_hi=T)
    kernel[plan.grid](**call)
if kind == "forward":
    pairs = [(args["hs_ptr"][T], hs_small[1]), (args["state_ptr"], h_small)]
else:
    pairs = [(args["dgates_x_ptr"][T - 1], small[0][0]), (args["carry_ptr"], small[2])]
    if variant == "cudnn":
        pairs.append((args["dgates_hn_ptr"][T - 1], small[1][0]))
print("equal", all(torch.equal(big, one) for big, one in pairs))
"""


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", ["forward", "backward"])
def test_the_last_step_of_a_sequence_past_2_31_elements(kind, variant):
    """The last step of a ``T`` that puts the step offset past 2^31, per step through the interpreter, against
    the same step run at ``t = 0``: bitwise equal (int32 offsets wrap, and read or write elsewhere or crash)."""
    done = subprocess.run([sys.executable, "-c", LAST_STEP, kind, variant], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "True", f"{kind} {variant}: the last step differs from the same step at t=0"
