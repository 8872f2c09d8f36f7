"""What a kernel call compiles to for a CUDA architecture, read without a GPU.

Triton's JIT specialises every call: each argument by its type, 16-byte alignment and divisibility by 16 (and
the value 1 or ``None`` as a constant), unless the kernel says ``do_not_specialize``. :func:`specialise`
reproduces that for a call's keyword arguments (meta tensors do: only dtypes and alignment matter), and
:func:`kernel_resources` compiles it to a cubin for ``sm_<arch>`` as the JIT does (Triton's bundled ``ptxas``,
its own flags) and reads what one program needs: registers and spilled bytes from the cubin
(:func:`cubin_usage`), shared memory from Triton's metadata. It needs Triton's CUDA backend but no GPU,
and must run without ``TRITON_INTERPRET``.

The code is the JIT's; the on-disk cache entry is not: the JIT gives ``None`` arguments and constexprs
(empty) attributes and unspecialised ones none, :func:`specialise` the other way round, so the cache keys
differ and a launch of the same call compiles again (seen with Triton 3.6 and 3.9). What must be found in the
cache at launch is compiled through the JIT itself (:mod:`tritongru.harness.precompile`).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import triton
from triton.backends.compiler import BaseBackend, GPUTarget
from triton.compiler import ASTSource
from triton.runtime.autotuner import Heuristics


@dataclass(frozen=True)
class Resources:
    """What one program of a compiled kernel needs: ``registers`` per thread, ``spills`` (bytes of stack its
    spilled registers take), ``shared`` (bytes of shared memory), and the kernel's ``ptx``."""

    registers: int
    spills: int
    shared: int
    ptx: str


def specialise(kernel, call: dict) -> tuple[ASTSource, dict]:
    """What the JIT would compile for ``kernel(**call)``: the heuristics' constants, each argument specialised
    as the JIT specialises it, and the launch options (``num_warps``, ``launch_pdl``, ...)."""
    call = dict(call)
    jit = kernel
    if isinstance(kernel, Heuristics):
        for name, rule in kernel.values.items():
            call[name] = rule(call)
        jit = kernel.fn
    options = {name: call.pop(name) for name in list(call) if name not in jit.arg_names}
    signature, constants, attrs = {}, {}, {}
    for index, (name, param) in enumerate(zip(jit.arg_names, jit.params, strict=True)):
        value = call[name]
        arg_type, hint = ("constexpr", "") if param.is_constexpr else _specialise(value, param)
        signature[name] = arg_type
        if arg_type == "constexpr":
            constants[(index,)] = value
        else:
            attrs[(index,)] = BaseBackend.parse_attr(hint)
    return ASTSource(fn=jit, signature=signature, constexprs=constants, attrs=attrs), options


def _specialise(value, param) -> tuple[str, str]:
    """``(type, hint)`` of an argument as the JIT specialises it (``do_not_specialize`` honoured)."""
    from triton._C.libtriton import native_specialize_impl

    arg_type, hint = native_specialize_impl(
        BaseBackend, value, False, not param.do_not_specialize, not param.do_not_specialize_on_alignment
    )
    return arg_type, hint if isinstance(hint, str) else ""


def compile_key(kernel, call: dict) -> tuple:
    """What makes two calls compile to different code: signature, constants, hints and options, but for
    ``launch_pdl``, which only changes how the same code is launched."""
    source, options = specialise(kernel, call)
    options.pop("launch_pdl", None)
    return (
        source.name,
        tuple(sorted(source.signature.items())),
        tuple(sorted((k, str(v)) for k, v in source.constants.items())),
        tuple(sorted((k, str(v)) for k, v in source.attrs.items())),
        tuple(sorted(options.items())),
    )


def kernel_resources(kernel, call: dict, arch: int) -> Resources:
    """Compile ``kernel(**call)`` for ``sm_<arch>`` and read its resources (registers and spills from the
    cubin); remembered per distinct compile for the life of the process."""
    key = (compile_key(kernel, call), arch)
    if key not in _found:
        _found[key] = _compile(kernel, call, arch)
    return _found[key]


_found: dict[tuple, Resources] = {}


def _compile(kernel, call: dict, arch: int) -> Resources:
    source, options = specialise(kernel, call)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    registers, stack = cubin_usage(compiled.asm["cubin"])
    return Resources(registers=registers, spills=stack, shared=compiled.metadata.shared, ptx=compiled.asm["ptx"])


def cubin_usage(cubin: bytes) -> tuple[int, int]:
    """``(registers per thread, stack bytes)`` of the one kernel in ``cubin``, as ``cuobjdump -res-usage``
    reads them from the cubin Triton built (with its own ptxas flags; no second ptxas run). The kernels keep
    no arrays in local memory, so their stack is their spilled registers."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "kernel.cubin"
        path.write_bytes(cubin)
        report = subprocess.run(
            [triton.knobs.nvidia.cuobjdump.path, "-res-usage", str(path)], capture_output=True, text=True, check=True
        ).stdout
    usage = re.search(r"REG:(\d+) STACK:(\d+)", report)
    return int(usage.group(1)), int(usage.group(2))


@dataclass(frozen=True)
class StepFacts:
    """What one pass of a persistent kernel's time loop does, read from its PTX (:func:`step_facts`): one step
    of one batch block (a program steps its batch blocks in a loop of the same code). ``round_trips`` per phase
    (how many times a warp waits for data other programs wrote: loads bypassing L1, ``ld.global.cg``, whose
    results are needed before the next ones are issued), ``mma`` (tensor-core instructions one warp issues) and
    ``arrivals`` (grid-barrier arrivals), ``exponentials`` (``ex2`` one thread issues: each element of the gates
    it evaluates, once; float64's ``exp`` is a sequence of FMAs and counts none), ``shuffles`` (``shfl.sync``
    one thread issues: lane exchanges, which a reduction over the warps' axis compiles to when its partials are
    not in one thread's registers)."""

    round_trips: tuple[int, ...]
    mma: int
    arrivals: int
    exponentials: int = 0
    shuffles: int = 0


_LABEL = re.compile(r"^(\$L__BB\d+_\d+):(.*)$")
_REGISTER = re.compile(r"%[a-z]+\d+")
_DEBUG_LABEL = re.compile(r"^\$L__tmp\d+:$")
"""A label of the line-number table, not an instruction."""
_ARRIVAL = re.compile(r"^(red|atom)\.global\.gpu\.release\.add")
_TAGGED_PUBLISH = "st.relaxed.gpu.global"
"""The tagged exchange's store of a word (inside its inline-asm block)."""


def _blocks(ptx: str) -> list[tuple[str, list[str]]]:
    """``(label, lines)`` of every basic block in text order; a block's first line is its label line with
    the comments LLVM puts after it (which name its loop)."""
    blocks: list[tuple[str, list[str]]] = [("", [])]
    for raw in ptx.splitlines():
        line = raw.strip()
        label = _LABEL.match(line)
        if label:
            blocks.append((label.group(1), [line]))
        elif line:
            blocks[-1][1].append(line)
    return blocks


def _loop_nest(ptx: str) -> tuple[list[tuple[str, list[str]]], dict[str, list[int]], dict[str, list[str]]]:
    """``(blocks, own, children)``: the PTX's basic blocks (:func:`_blocks`), each loop's own blocks (those whose
    innermost loop it is, by its header's name) and its directly nested loops, from the loop comments LLVM
    writes after each block's label."""
    blocks = _blocks(ptx)
    own: dict[str, list[int]] = {}
    children: dict[str, list[str]] = {}
    for index, (label, lines) in enumerate(blocks):
        comments = " ".join(line for line in lines if line.startswith("//") or "//" in line[:1] or line is lines[0])
        name = label.removeprefix("$L__")
        header = re.search(r"in Loop: Header=(\w+)", comments)
        if "Loop Header" in comments:
            own.setdefault(name, []).append(index)
            parents = re.findall(r"Parent Loop (\w+)", comments)
            if parents:
                children.setdefault(parents[-1], []).append(name)  # listed outermost first
        elif header:
            own.setdefault(header.group(1), []).append(index)
    return blocks, own, children


def _instructions(blocks: list[tuple[str, list[str]]], indices: list[int]) -> list[str]:
    lines = [line for i in indices for line in blocks[i][1][1:] if not line.startswith(".")]
    return [line for line in lines if not line.startswith("//") and not _DEBUG_LABEL.match(line)]


def time_loop(ptx: str, retries: bool = True) -> list[str]:
    """The instructions of the kernel's time loop in the order one iteration runs them: the outermost loop
    with the most instructions, from its header on, and so each loop nested in it from its own header on (blocks
    LLVM placed before a loop's header, its latch, come after the loop's other blocks), nested loops included
    once (the barrier's spin loop, the loop over batch blocks, a pipelined K loop; ``retries=False``: not the
    tagged exchange's retry loops, whose volatile loads run only where a word was stale at the first poll).
    Raises ``ValueError`` when the PTX has no loop."""
    blocks, own, children = _loop_nest(ptx)
    if not own:
        raise ValueError("no loop in this PTX")
    nested = {child for names in children.values() for child in names}
    if not retries:
        children = {
            name: [child for child in names if not _retry_loop(_instructions(blocks, own.get(child, [])))]
            for name, names in children.items()
        }

    def every(name: str) -> list[int]:
        return own.get(name, []) + [i for child in children.get(name, []) for i in every(child)]

    def arranged(name: str) -> list[int]:
        indices = sorted(every(name))
        start = next(i for i in indices if blocks[i][0] == f"$L__{name}")
        order = [i for i in indices if i >= start] + [i for i in indices if i < start]
        for child in children.get(name, []):
            inner = set(every(child))
            at = next(k for k, i in enumerate(order) if i in inner)
            rest = [i for i in order if i not in inner]
            order = rest[:at] + arranged(child) + rest[at:]
        return order

    header = max((name for name in own if name not in nested), key=lambda name: len(_instructions(blocks, every(name))))
    return _instructions(blocks, arranged(header))


def _retry_loop(body: list[str]) -> bool:
    """Whether a loop's own instructions are a tagged exchange's retry: they poll with volatile loads and
    multiply nothing (a loop over batch blocks holds its first polls, and its products)."""
    opcodes = [re.sub(r"^@!?%\w+\s+", "", line) for line in body]
    polls = any(opcode.startswith("ld.volatile.global") for opcode in opcodes)
    return polls and not any(opcode.startswith(("mma.sync", "wgmma.mma_async")) for opcode in opcodes)


def copy_loops(ptx: str) -> list[str]:
    """The instructions of every innermost loop that copies into shared memory (``cp.async``): the body of the
    pipelined loop over streamed K chunks, which :func:`time_loop` holds once and a step runs once per chunk."""
    blocks, own, children = _loop_nest(ptx)
    found = []
    for name, indices in own.items():
        body = _instructions(blocks, sorted(indices))
        if name not in children and any(line.startswith(("cp.async.ca.", "cp.async.cg.")) for line in body):
            found += body
    return found


def instruction_count(lines: list[str]) -> int:
    """PTX instructions in ``lines`` (of :func:`time_loop`): one a line, but an inline-asm block (``{ .reg ...;
    and.b32 ...; or.b32 ...; }``, the ties of :mod:`~tritongru.kernels.gru_math`) counts each of its instructions."""
    count = 0
    for line in lines:
        if line.startswith("{"):
            statements = (part.strip() for part in line.strip("{} ").split(";"))
            count += sum(1 for part in statements if part and not part.startswith("."))
        else:
            count += 1
    return count


def _operands(line: str) -> tuple[str, list[str], list[str]]:
    """``(opcode, registers written, registers read)`` of one PTX instruction."""
    line = re.sub(r"^@!?%\w+\s+", "", line.split("//")[0]).rstrip(";").strip()
    opcode, _, rest = line.partition(" ")
    if opcode.startswith(("st.", "red.", "stmatrix", "bar", "bra", "ret", "fence", "membar")):
        return opcode, [], _REGISTER.findall(rest)
    depth, split = 0, len(rest)
    for position, char in enumerate(rest):
        depth += char in "{["
        depth -= char in "}]"
        if char == "," and depth == 0:
            split = position
            break
    return opcode, _REGISTER.findall(rest[:split]), _REGISTER.findall(rest[split:])


def step_facts(ptx: str) -> StepFacts:
    """Count what one iteration of the time loop (:func:`time_loop`) waits for and issues.

    The model of a round trip: every exchange load (``ld.global.cg``, or the tagged exchange's first poll,
    ``ld.volatile.global``; its retry loops are left out, as the barrier's repeated polls are) issued since the
    last wait is in flight; the first instruction that reads one of their registers (a copy only renames it)
    waits for all of them, and they all arrive together. Copies straight into shared memory (``cp.async``, a
    pipelined loop's) are waited for by ``cp.async.wait_group``: one round trip for those issued since the last.
    A grid-barrier arrival (release add) ends a phase; with the tagged exchange, which has none, the first CTA
    barrier after a tagged publish does."""
    phases, pending, trips, mma, arrivals, exponentials, shuffles = [], set(), 0, 0, 0, 0, 0
    copying = published = False
    for line in time_loop(ptx, retries=False):
        opcode, written, read = _operands(line)
        if opcode.startswith(("cp.async.ca.", "cp.async.cg.")):
            copying = True
        elif opcode.startswith("cp.async.wait") and copying:
            trips += 1
            copying = False
        exponentials += opcode.startswith("ex2.")
        shuffles += opcode.startswith("shfl.")
        if _ARRIVAL.match(opcode):
            arrivals += 1
            phases.append(trips)
            pending, trips, copying = set(), 0, False
            continue
        published = published or _TAGGED_PUBLISH in line
        if published and opcode.startswith("bar.sync"):
            phases.append(trips)
            pending, trips, copying, published = set(), 0, False, False
            continue
        if opcode.startswith("mma.sync") or opcode.startswith("wgmma.mma_async"):
            mma += 1
        renames = opcode.startswith("mov") and read and all(register in pending for register in read)
        if opcode.startswith(("ld.global.cg", "ld.volatile.global")) or renames:
            pending.update(written)
        elif pending.intersection(read):
            trips += 1
            pending.clear()
    if trips or not phases:
        phases.append(trips)
    return StepFacts(
        round_trips=tuple(phases), mma=mma, arrivals=arrivals, exponentials=exponentials, shuffles=shuffles
    )


def copy_problems(ptx: str) -> list[str]:
    """How copies straight into shared memory (``cp.async``) could cross a grid barrier in a kernel's PTX (empty
    when none can): one through L1 (``.ca``: what it caches may be another program's stale data), one outside
    the time loop, one in flight (not waited for with ``cp.async.wait_group 0`` or
    ``cp.async.wait_all``) at a barrier arrival, whose release would not cover what it wrote, or one issued after
    an arrival before the poll's acquire load, which could read the data of the step before. The loop is read
    twice, so that what is in flight at its end is in flight at its start."""
    lines = [line.strip() for line in ptx.splitlines()]
    issued = [line for line in lines if line.startswith(("cp.async.ca.", "cp.async.cg."))]
    if not issued:
        return []
    try:
        loop = time_loop(ptx)
    except ValueError:
        loop = []
    if len(issued) != sum(line.startswith(("cp.async.ca.", "cp.async.cg.")) for line in loop):
        return ["an asynchronous copy (cp.async) outside the time loop could cross the barrier"]
    problems, in_flight, arrived = [], False, False
    if any(line.startswith("cp.async.ca.") for line in issued):
        problems.append("an asynchronous copy through L1 (cp.async.ca), which is not coherent across SMs")
    for line in loop + loop:
        opcode, _, _ = _operands(line)
        if opcode.startswith(("cp.async.ca.", "cp.async.cg.")):
            if arrived:
                problems.append("an asynchronous copy (cp.async) issued between a barrier arrival and its poll")
            in_flight = True
        elif opcode == "cp.async.wait_all" or re.match(r"cp\.async\.wait_group\s+0;", line):
            in_flight = False
        elif _ARRIVAL.match(opcode):
            if in_flight:
                problems.append("an asynchronous copy (cp.async) in flight at a barrier arrival")
            arrived = True
        elif re.match(r"(ld|atom)\.global\.gpu\.acquire", opcode):
            arrived = False
    return list(dict.fromkeys(problems))


EXCHANGED_OPERANDS = {("forward", "cudnn"): (1,), ("forward", "classic"): (1, 1), ("backward", "cudnn"): (3,)}
EXCHANGED_OPERANDS["backward", "classic"] = (1, 2)
"""Full-width operands other programs wrote that each phase of a step multiplies: forward ``h_{t-1}`` (classic:
then ``R * h``), backward the gate gradients (cudnn: ``dar, daz, dhn``; classic: ``dan``, then ``dar, daz``;
its phase 0, which reads none, runs with the phase before it)."""

MMA_SHAPE = {2: (16, 8, 16), 4: (16, 8, 8)}
"""``(m, n, k)`` of one ``mma.sync`` by the storage dtype's bytes: ``m16n8k16`` for bf16/fp16, ``m16n8k8`` for
TF32. float64's (``DMMA``) is the compiler's choice: ``m16n8k16`` with Triton 3.6, ``m8n8k4`` with 3.9
(:func:`mma_shape` reads it)."""

_MMA = re.compile(r"mma\.sync\.aligned\.m(\d+)n(\d+)k(\d+)\.")


def mma_shape(ptx: str) -> tuple[int, int, int] | None:
    """``(m, n, k)`` of the first ``mma.sync`` in ``ptx``; None where it has none."""
    found = _MMA.search(ptx)
    return None if found is None else (int(found.group(1)), int(found.group(2)), int(found.group(3)))


def planned_step(
    kind: str,
    variant: str,
    config,
    width: int,
    dtype,
    tensor_cores: bool = True,
    shape: tuple[int, int, int] | None = None,
) -> StepFacts:
    """What one pass of the grid-synchronised ``kind`` kernel's time loop (one batch block of a step: the
    kernel loops over its ``batch_blocks``, each the same code) should do under ``config``, from its plan: one
    round trip per phase and wave of exchanged chunks against held weights (:func:`tritongru.configs.wave_chunks`);
    the chunks whose weights are streamed (``streamed_chunks``) in a loop, read once: with pipelined copies
    (``num_stages`` of 2 or more) its body's wait for a chunk's copies and the wait after it, else one; the tile's
    ``mma`` (of ``shape``, by default :data:`MMA_SHAPE`'s) over the held chunks and the loop's one, shared out over
    the warps with none computed twice (``mma`` is 0 where the products run on the FMA units: IEEE float32,
    ``tensor_cores=False``); one barrier arrival per phase (the backward's phase 0 of its last step comes before the
    loop); in the forward, each thread evaluating its share of the tile's three gates, no warp another's (``ex2``
    where the gates are float32; the backward reads its gates); no lane shuffle (each element's cross-warp partials
    summed in one thread's registers: ``tritongru.kernels.gru_math.finish_products``). ``width``: the products'
    K, ``H`` (or a multi-head GRU's units per head)."""
    from tritongru.configs import held_chunks, wave_chunks

    chunks = -(-width // config.block_k)
    held = held_chunks(config, width)
    wave = wave_chunks(config, width, dtype)
    loop = 0 if held == chunks else 2 if config.num_stages >= 2 else 1
    trips = tuple(-(-(n * held) // wave) + loop for n in EXCHANGED_OPERANDS[kind, variant])
    mma = 0
    if tensor_cores:
        m, n, k = shape or MMA_SHAPE[dtype.itemsize]
        read = held + (held < chunks)  # the loop's body holds one chunk's products
        mma = config.block_b * config.block_h * 3 * read * config.block_k // (m * n * k) // config.num_warps
    exponentials = 0
    if kind == "forward" and dtype.itemsize <= 4:
        exponentials = 3 * -(-config.block_b * config.block_h // (32 * config.num_warps))
    return StepFacts(round_trips=trips, mma=mma, arrivals=len(trips), exponentials=exponentials)
