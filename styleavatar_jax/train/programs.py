"""Compiled training phases: one XLA program per (phase, neural resolution), made ahead.

The neural-rendering resolution sets array shapes, so every resolution of EG3D's fade
(64 → 128 over 1000 kimg: 65 values) needs its own Gmain, Greg, Dmain and Dreg programs.
Compiled when first called, each new resolution stalls training for the time of four
compilations (minutes for the 512² config on a GPU). Here a program is compiled from the
arguments' shapes and shardings alone (`jax.jit(...).lower(abstract).compile()`), so the
loop can ask for the next resolution's programs while the current ones run
(`Programs.compile_ahead`, one background thread); when the schedule reaches it, they are
ready. The programs are the ones the on-demand path compiles (same function, same shapes):
what is computed at each resolution does not change. The `finish` phase (EMA, counters)
does not depend on the resolution and is compiled once.

A background compile sees JAX's global configuration (`jax.config.update`), not a
thread-local one set with a context manager around the loop (`with
jax.default_matmul_precision(...)`): set such options globally when training.

Programs are shared through a process-wide table (as `jax.jit`'s own cache is), so every
Trainer of the same networks and mesh, e.g. a resumed run in the same process, reuses them.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import jax

TABLE_SIZE = 32  # compiled programs kept (4 phases × 8 resolutions)

_TABLE: collections.OrderedDict[tuple, Future] = collections.OrderedDict()
_LOCK = threading.Lock()


def signature(args) -> tuple:
    """The abstract value of an argument pytree: structure, and per leaf shape, dtype,
    sharding and weak type (what a compiled program is specialised to)."""
    leaves, tree = jax.tree.flatten(args)
    return tree, tuple(
        (tuple(x.shape), x.dtype, getattr(x, "sharding", None), getattr(x, "weak_type", False))
        for x in leaves
    )


def abstract(args):
    """Arrays -> jax.ShapeDtypeStruct of the same shape and dtype. No sharding: the jitted
    function's in_shardings (or the default device) place the arguments."""

    def spec(x):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, weak_type=getattr(x, "weak_type", False))

    return jax.tree.map(spec, args)


def _lookup(key: tuple, make: Callable[[], Any], executor: ThreadPoolExecutor | None):
    """The table's future for key, or a new one running make() (here, or on the executor);
    a failed or cancelled one is replaced. -> (future, whether this call made it)."""
    with _LOCK:
        fut = _TABLE.get(key)
        failed = fut is not None and (fut.cancelled() or (fut.done() and fut.exception()))
        if fut is not None and not failed:
            _TABLE.move_to_end(key)
            return fut, False
        if executor is not None:
            fut = executor.submit(make)
        else:
            fut = Future()
        _TABLE[key] = fut
        while len(_TABLE) > TABLE_SIZE:
            _TABLE.popitem(last=False)
    if executor is None:
        try:
            fut.set_result(make())
        except BaseException as e:  # the caller sees it through result()
            fut.set_exception(e)
    return fut, True


class Programs:
    """Compiled programs of `jit_fn(phase, neural_res)` (a jax.jit-wrapped function) for one
    networks/mesh `owner` (a hashable key part).

    get(): the program for the given arguments, compiled now or waited for if a background
    compile of it is under way (one that failed is retried here, where its error shows).
    compile_ahead(): start compiling in the background.
    Counts: `compiled` (programs this object compiled), `compile_s` (their compile time, in
    whichever thread), `wait_s` (time the caller stood still in get(): compiling there or
    waiting for the background thread).
    """

    def __init__(self, owner, jit_fn: Callable[[str, int], Any], *, ahead: bool = True):
        self.owner, self.jit_fn = owner, jit_fn
        self._executor = ThreadPoolExecutor(1, "compile-ahead") if ahead else None
        self._local: dict[tuple, Any] = {}
        self._count_lock = threading.Lock()
        self.compiled, self.compile_s, self.wait_s = 0, 0.0, 0.0

    def _make(self, phase: str, res: int, spec) -> Callable[[], Any]:
        def make():
            t0 = time.perf_counter()
            program = self.jit_fn(phase, res).lower(*spec).compile()
            with self._count_lock:
                self.compiled += 1
                self.compile_s += time.perf_counter() - t0
            return program

        return make

    def get(self, phase: str, res: int, args: tuple):
        """The compiled program of phase at res for `args` (a tuple of pytrees)."""
        sig = signature(args)
        program = self._local.get((phase, res, sig))
        if program is not None:
            return program
        t0 = time.perf_counter()
        key, make = (self.owner, phase, res, sig), self._make(phase, res, abstract(args))
        fut, here = _lookup(key, make, None)
        try:
            program = fut.result()
        except Exception:
            if here:
                raise
            # A compile ahead failed (e.g. out of memory beside the running step): try here.
            program = _lookup(key, make, None)[0].result()
        self.wait_s += time.perf_counter() - t0
        self._local[(phase, res, sig)] = program
        return program

    def compile_ahead(self, phases: Iterable[str], res: int, args: tuple) -> None:
        """Start compiling `phases` at res for arguments shaped as `args` (not blocking)."""
        if self._executor is None:
            return
        spec, sig = abstract(args), signature(args)
        for phase in phases:
            if (phase, res, sig) not in self._local:
                _lookup((self.owner, phase, res, sig), self._make(phase, res, spec),
                        self._executor)  # fmt: skip

    def stats(self) -> dict[str, float]:
        return {"compiled": self.compiled, "compile_s": self.compile_s, "wait_s": self.wait_s}

    def close(self) -> None:
        """Stop the background thread (a compile under way finishes on its own)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
