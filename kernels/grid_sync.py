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

**Tagged exchange** (opt-in, ``TRITONGRU_EXCHANGE=tagged``; the forward kernel): no counter. Each exchanged
value is stored with the step's tag in one word (:func:`publish_tagged`: int32 words for 2-byte values, int64
for 4-byte ones; a word is one single-copy-atomic store), in a buffer of two slots that the host zeroes before
the launch, and a reader polls the words themselves until every one carries the tag it waits for
(:func:`wait_for_tag`): the data's own round trip is the wait, where the counter costs an arrival and a poll
before it. The wait is bounded as the barrier's, and on expiry poisons the group's counter, which the host
checks as it checks the barrier's.

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
def exchange_tag(t, t_lo):
    """The tag of what is published for step ``t`` of a launch that starts at ``t_lo``: 1 .. 65535 (16 bits), never
    the 0 of a zeroed buffer, and never the tag of two steps before (whose data the slot held)."""
    return (t - t_lo) % 65535 + 1


@triton.jit
def publish_tagged(p, value, tag, mask):
    """Store each element of ``value`` (a 2- or 4-byte float tile) with ``tag`` in its word at ``p`` (int32 words
    for 2-byte values, int64 for 4-byte): the value's bits low, the tag above them. Each word is one relaxed
    store at GPU scope (the polls are volatile loads), so the exchange has no data race and no word is torn."""
    if value.dtype.primitive_bitwidth == 16:
        word = (value.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF) | (tag << 16)
    else:
        word = (value.to(tl.int32, bitcast=True).to(tl.int64) & 0xFFFFFFFF) | (tag.to(tl.int64) << 32)
    if _INTERPRETING:
        tl.store(p, word, mask=mask)
    elif value.dtype.primitive_bitwidth == 16:
        _store_relaxed(p, mask, word, "b32", "r")
    else:
        _store_relaxed(p, mask, word, "b64", "l")


@triton.jit
def _store_relaxed(p, mask, word, TYPE: tl.constexpr, REGISTER: tl.constexpr):
    """``st.relaxed.gpu.global`` of each ``word`` (PTX type ``TYPE``, register class ``REGISTER``) where ``mask``."""
    tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.b32 p, $2, 0; @p st.relaxed.gpu.global." + TYPE + " [$1], $3; mov.b32 $0, 0; }",
        "=r,l,r," + REGISTER,
        [p, mask.to(tl.int32), word],
        dtype=tl.int32,
        is_pure=False,
        pack=1,
    )


@triton.jit
def _tag_word(tag, WORD_BITS: tl.constexpr):
    """A word that carries ``tag`` (and the value 0): what a masked-off element of a poll reads."""
    if WORD_BITS == 32:
        return tag << 16
    else:
        return tag.to(tl.int64) << 32


@triton.jit
def _mismatch(words, tag):
    """Per word, its tag XOR ``tag``: 0 where it carries ``tag`` (unsigned, so a maximum says if any does not)."""
    if words.dtype.primitive_bitwidth == 32:
        return (words.to(tl.uint32, bitcast=True) >> 16) ^ tag.to(tl.uint32)
    else:
        return (words.to(tl.uint64, bitcast=True) >> 32).to(tl.uint32) ^ tag.to(tl.uint32)


@triton.jit
def load_tagged(p, mask, tag, WORD_BITS: tl.constexpr):
    """The first poll of the tagged words at ``p`` (:func:`wait_for_tag` takes it from there): volatile (past L1,
    and no compiler holds a word across polls or moves the load); a masked-off word reads as one that carries
    ``tag``."""
    return tl.load(p, mask=mask, other=_tag_word(tag, WORD_BITS), volatile=True)


@triton.jit
def wait_for_tag(p, mask, words, tag, value_dtype: tl.constexpr, sync_ptr, i_group, spin_limit):
    """The values of the tagged words at ``p`` (``mask``) once every one carries ``tag``: ``words`` is their first
    poll (:func:`load_tagged`), and only the words still stale are loaded again. Bounded as
    :func:`step_barrier`'s wait: on expiry the group's counter ``sync_ptr[i_group]`` is raised to :data:`POISON`
    (the host raises) and the stale values are returned."""
    WORD_BITS: tl.constexpr = words.dtype.primitive_bitwidth
    start = _clock()
    polls = 0
    while tl.max(_mismatch(words, tag)) != 0:
        polls += 1
        if _INTERPRETING:
            spent = polls
        else:
            spent = _clock() - start
        stale = _mismatch(words, tag) != 0
        if spent > spin_limit:
            tl.atomic_max(sync_ptr + i_group, POISON, sem="relaxed", scope="gpu")
            words = tl.where(stale, _tag_word(tag, WORD_BITS), words)
        else:
            words = tl.where(stale, tl.load(p, mask=mask & stale, other=0, volatile=True), words)
    if WORD_BITS == 32:
        return words.to(tl.int16).to(value_dtype, bitcast=True)
    else:
        return words.to(tl.int32).to(value_dtype, bitcast=True)


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
