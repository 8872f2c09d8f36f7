"""Triton's CPU interpreter with every program of a launch running at once, each in its own thread.

The interpreter normally runs a grid's programs one after another, so a kernel whose programs wait for each
other (the persistent kernels' grid barrier) would spin forever. :func:`concurrent_programs` patches it for
the duration of a ``with`` block:

- the program id the interpreter keeps (one attribute of its builder, shared by all programs) becomes
  thread-local;
- a launch starts one thread per program, joins them, and re-raises the first error of any of them;
- a jit helper's first call (which rewrites it into its module's globals) is one thread at a time.

Loads, stores and atomics go to the same host memory from every thread; the interpreter's atomics are real
atomics. Python's GIL interleaves the threads at arbitrary points, which is what makes the exercise honest:
a program may be preempted between any two operations. Options shake the interleaving or break the launch on
purpose: ``delay`` sleeps a random time before every atomic operation (every arrival at and every poll of a
barrier); ``store_delay`` sleeps before every store of every program but those of the first hidden slice, so
that those run ahead; ``absent`` names programs that never run (a grid that is not all resident).

This relies on the interpreter's internals (``GridExecutor``, ``interpreter_builder``), checked with Triton
3.6 and 3.9; it is test support, not library code.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import random
import sys
import threading
from collections.abc import Iterator

import pytest
import torch

from tritongru import launchers

interpreter = pytest.importorskip("triton.runtime.interpreter")


class _ThreadLocalIndex:
    """A data descriptor that keeps the builder's ``grid_idx`` per thread."""

    def __init__(self) -> None:
        self.local = threading.local()

    def __get__(self, builder, owner=None):
        return getattr(self.local, "index", None)

    def __set__(self, builder, value) -> None:
        self.local.index = value


def _run_concurrently(executor, *args_dev, absent: frozenset = frozenset(), **kwargs) -> None:
    """``GridExecutor.__call__`` with one thread per program (but those in ``absent``)."""
    spec = inspect.getfullargspec(executor.fn)
    kwargs = {key: value for key, value in kwargs.items() if key in spec.args or key in spec.kwonlyargs}
    args_host, kwargs_host = executor._init_args_hst(args_dev, kwargs)
    for hook in executor.pre_run_hooks:
        hook(*args_host, **kwargs_host)
    patches = interpreter._patch_lang(executor.fn)
    try:
        bound = inspect.getcallargs(executor.fn, *args_host, **kwargs_host)
        bound = {
            name: value if name in executor.constexprs else interpreter._implicit_cvt(value)
            for name, value in bound.items()
        }
        grid = executor.grid(bound) if callable(executor.grid) else executor.grid
        grid = tuple(grid) + (1,) * (3 - len(grid))
        builder = interpreter.interpreter_builder
        builder.set_grid_dim(*grid)
        errors: list[BaseException] = []

        def program(index: tuple[int, int, int]) -> None:
            try:
                builder.set_grid_idx(*index)
                executor.fn(**bound)
            except BaseException as error:  # reported by the launching thread below
                errors.append(error)

        indices = [index for index in itertools.product(*map(range, grid)) if index not in absent]
        threads = [threading.Thread(target=program, args=(index,)) for index in indices]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise interpreter.InterpreterError(repr(errors[0])) from errors[0]
    finally:
        patches.restore()
    executor._restore_args_dev(args_dev, args_host, kwargs, kwargs_host)


@contextlib.contextmanager
def concurrent_programs(
    monkeypatch,
    *,
    delay: float = 0.0,
    store_delay: float = 0.0,
    absent: tuple[tuple[int, int, int], ...] = (),
    seed: int = 0,
) -> Iterator[None]:
    """Run every interpreted launch's programs concurrently, and let the launchers plan grid barriers."""
    rng = random.Random(seed)
    sleep = threading.Event().wait
    builder = interpreter.interpreter_builder
    builder_type = type(builder)
    monkeypatch.setattr(builder_type, "grid_idx", _ThreadLocalIndex(), raising=False)
    monkeypatch.setattr(
        interpreter.GridExecutor,
        "__call__",
        lambda executor, *args, **kwargs: _run_concurrently(executor, *args, absent=frozenset(absent), **kwargs),
    )
    monkeypatch.setattr(launchers, "grid_sync_available", lambda device: True)
    # A helper's first call rewrites it and adds the interpreter's names to its module's globals, while another
    # thread may be reading those globals to patch them: one thread at a time through either.
    first_calls = threading.RLock()
    real_patch_lang, real_rewrite = interpreter._patch_lang, interpreter.InterpretedFunction.rewrite

    def patch_lang(fn):
        with first_calls:
            return real_patch_lang(fn)

    def rewrite(function):
        with first_calls:
            return real_rewrite(function)

    monkeypatch.setattr(interpreter, "_patch_lang", patch_lang)
    monkeypatch.setattr(interpreter.InterpretedFunction, "rewrite", rewrite)
    if delay:
        real_rmw = builder_type.create_atomic_rmw

        def delayed_rmw(self, *args):
            sleep(rng.random() * delay)
            return real_rmw(self, *args)

        monkeypatch.setattr(builder_type, "create_atomic_rmw", delayed_rmw)
    if store_delay:
        for name in ("create_store", "create_masked_store"):
            real_store = getattr(builder_type, name)

            def delayed_store(self, *args, real_store=real_store):
                if self.grid_idx[0] > 0:
                    sleep(store_delay)
                return real_store(self, *args)

            monkeypatch.setattr(builder_type, name, delayed_store)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # hand the GIL over often: more interleavings, shorter waits
    try:
        yield
    finally:
        sys.setswitchinterval(switch_interval)


def forward_with_a_missing_program(monkeypatch, variant: str, steps: int, batch: int, hidden: int, device) -> None:
    """A forward sequence of fresh data whose program ``(2, 1)`` (third slice, second group) never runs, with a
    20 ms wait budget: check that the launch ends and raises the timeout's ``RuntimeError``."""
    monkeypatch.setattr(launchers, "BARRIER_TIMEOUT_S", 0.02)
    gi = torch.randn(steps, batch, 3 * hidden, device=device)
    h0 = torch.randn(batch, hidden, device=device)
    w_hh = torch.randn(3 * hidden, hidden, device=device) * 0.1
    with (
        concurrent_programs(monkeypatch, absent=((2, 1, 0),)),
        pytest.raises(RuntimeError, match=r"timed out.*TRITONGRU_GRID_SYNC=0"),
    ):
        launchers.forward_sequence(gi, h0, w_hh, None, variant=variant)
