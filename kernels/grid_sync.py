"""The step barrier of the persistent kernels: every program of a batch block meets here between phases.

Protocol (one ``int32`` counter per batch block, zeroed by the host before the launch, only ever growing):

- **arrive**: a CTA barrier (every thread's stores of the phase are issued and visible to the CTA), then one
  ``atomic_add(counter, 1)`` with *release* semantics at GPU scope, which publishes those stores;
- **wait**: poll the counter with *acquire* loads until it reaches ``programs x barriers passed``, then a CTA
  barrier. The target grows with every barrier, so there is no reset and no reset race;
- **never hang**: the wait is bounded (``spin_limit``: nanoseconds of ``%globaltimer`` on a GPU, polls under
  Triton's interpreter). On expiry the program raises the counter to at least :data:`POISON` with an atomic
  max: every later wait of every program then passes at once, the kernel runs to its end, and the host sees
  the poisoned counter and raises.

Data exchanged through a barrier must be read with loads that bypass L1 (``cache_modifier=".cg"``): L1 is not
coherent across SMs. The time loops run as ``tl.range(..., num_stages=1)`` so that no load of a later step is
pipelined above a wait.

With ``GRID_SYNC=False`` only the CTA barrier remains: correct when one program owns the whole hidden width of
its rows, or when a launch runs a single phase (kernel boundaries then order the phases).
"""

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from tritongru.environment import interpreting

POISON: tl.constexpr = tl.constexpr(1 << 30)
"""Counter value that marks a timed-out barrier; healthy counts stay below it (checked by the host)."""

_INTERPRETING = tl.constexpr(interpreting())


@triton.jit
def _clock():
    """Where the spin budget is counted from: ``%globaltimer`` (ns) on a GPU; 0 under the interpreter, whose
    budget is a number of polls."""
    if _INTERPRETING:
        return 0
    else:
        return tl.extra.cuda.globaltimer()


@triton.jit
def after_previous_launch(USE_PDL: tl.constexpr):
    """Programmatic dependent launch (per-step launches on Hopper and newer): let the next launch start (it
    waits here in turn), then wait until the previous launch has finished and its writes are visible. It comes
    before the first load: loads issued above the wait would have to stay in registers across it (compiled for
    sm_90, forward B=1 H=768 bf16: 255 registers and 88 bytes spilled, against 160 and none)."""
    if USE_PDL:
        gdc_launch_dependents()
        gdc_wait()


@triton.jit
def step_barrier(sync_ptr, i_group, arrivals, spin_limit, GRID_SYNC: tl.constexpr):
    """Wait until ``arrivals`` programs have arrived at this group's counter ``sync_ptr[i_group]``.

    ``arrivals`` is ``programs in the group x barriers passed in this launch, this one included``.
    """
    tl.debug_barrier()
    if GRID_SYNC:
        counter = sync_ptr + i_group
        tl.atomic_add(counter, 1, sem="release", scope="gpu")
        seen = tl.atomic_add(counter, 0, sem="acquire", scope="gpu")
        start = _clock()
        polls = 0
        while seen < arrivals:
            polls += 1
            if _INTERPRETING:
                spent = polls
            else:
                spent = _clock() - start
            if spent > spin_limit:
                tl.atomic_max(counter, POISON, sem="relaxed", scope="gpu")
            seen = tl.atomic_add(counter, 0, sem="acquire", scope="gpu")
        tl.debug_barrier()


@triton.jit
def barrier_stress_kernel(tags_ptr, errors_ptr, sync_ptr, steps, max_delay, spin_limit, BLOCK: tl.constexpr):
    """The barrier alone, stressed: at every step each program waits a pseudo-random time (up to ``max_delay``
    ns of ``%globaltimer``, or polls under the interpreter), writes the step number into its slot of a
    double-buffered tag row, meets the others at :func:`step_barrier`, then reads every program's tag: any tag
    that is not this step's is counted into ``errors``. ``tags`` ``[2, programs]`` int32, ``errors`` and
    ``sync`` one int32 each; ``BLOCK`` a power of two >= the number of programs."""
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    o = tl.arange(0, BLOCK)
    for step in tl.range(0, steps, num_stages=1):
        delay = ((pid + 1).to(tl.int64) * 1103515245 + step * 12345 + 7) % 2147483647 % (max_delay + 1)
        start = _clock()
        now = start
        while now - start < delay:
            if _INTERPRETING:
                now += 1
            else:
                now = _clock()
        slot = tags_ptr + (step % 2) * programs
        tl.store(slot + pid, step)
        step_barrier(sync_ptr, 0, programs * (step + 1), spin_limit, True)
        seen = tl.load(slot + o, mask=o < programs, other=0, cache_modifier=".cg")
        wrong = tl.sum(((seen != step) & (o < programs)).to(tl.int32))
        if wrong > 0:
            tl.atomic_add(errors_ptr, wrong)
