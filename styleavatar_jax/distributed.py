"""Multi-process JAX: join the processes of one run before any device is used.

    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=i \\
        styleavatar-jax train --distributed ...

The three settings come from flags (--coordinator, --num-processes, --process-id) or else
these environment variables; with none set (Cloud TPU pod slices, SLURM) jax finds them
itself. On CPU the collectives between processes run over gloo (TCP). Bad settings are one
error naming the flag or variable, within `timeout_s`: a coordinator nobody answers at, a
process that never joins, processes that disagree on the count, an id out of range. Once
joined, a process that dies makes the others exit (jax's heartbeat, `heartbeat_s`).
"""

from __future__ import annotations

import inspect
import math
import os
import sys
import threading
from collections.abc import Mapping

import jax
import numpy as np

# setting -> (flag, environment variable)
NAMES = {
    "coordinator": ("--coordinator", "JAX_COORDINATOR_ADDRESS"),
    "num_processes": ("--num-processes", "JAX_NUM_PROCESSES"),
    "process_id": ("--process-id", "JAX_PROCESS_ID"),
}
GRACE_S = 5  # jax's own init timeout is this much later than ours: ours speaks first
EXIT_TIMEOUT = 2  # the CLI's exit status for bad input


def settings(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, tuple[str | int, str]] | None:
    """Flags, else environment -> {setting: (value, "--flag=v" or "VAR=v")}, checked; None
    when nothing is set (jax's cluster detection)."""
    given = dict(coordinator=coordinator, num_processes=num_processes, process_id=process_id)
    out = {}
    for key, value in given.items():
        flag, var = NAMES[key]
        if value is not None:
            out[key] = (value, f"{flag}={value}")
        elif environ.get(var, "").strip():
            text = environ[var].strip()
            if key != "coordinator":
                try:
                    out[key] = (int(text), f"{var}={text}")
                except ValueError:
                    raise ValueError(f"{var}={text!r}: expected an integer") from None
            else:
                out[key] = (text, f"{var}={text}")
    if not out:
        return None
    missing = [" or ".join(NAMES[k][::-1]) for k in NAMES if k not in out]
    if missing:
        raise ValueError(
            f"--distributed with {', '.join(w for _, w in out.values())} needs "
            f"{', '.join(missing)} too (set all three, or none on TPU pod slices and SLURM)"
        )
    (coord, c_where), (n, n_where), (i, i_where) = (out[k] for k in NAMES)
    host, _, port = coord.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{c_where}: expected HOST:PORT, e.g. 10.0.0.1:1234")
    if n < 1:
        raise ValueError(f"{n_where}: expected an integer ≥ 1")
    if not 0 <= i < n:
        raise ValueError(f"{i_where}: expected a process id in [0, {n}) ({n_where})")
    return out


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: float = 120.0,
    heartbeat_s: float = 30.0,
) -> None:
    """jax.distributed.initialize with the checked settings (module docstring). A process
    that has not joined all the others after timeout_s prints why and exits with status 2."""
    given = settings(coordinator, num_processes, process_id)
    if "jax_cpu_collectives_implementation" in jax.config.values:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if given is None:
        where = "the TPU or SLURM environment (none of " + ", ".join(
            f"{f} / {v}" for f, v in NAMES.values()
        )
        where += " set)"
        kwargs = {}
    else:
        where = ", ".join(w for _, w in given.values())
        kwargs = {k: v for k, (v, _) in given.items()}
        kwargs["coordinator_address"] = kwargs.pop("coordinator")
    # jax aborts the process (no Python error) when the join times out: we speak first.
    watchdog = threading.Timer(timeout_s, _give_up, (where, timeout_s))
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(**kwargs, **_timeouts(timeout_s + GRACE_S, heartbeat_s))
    finally:
        watchdog.cancel()
    if given is not None:
        _check_agreement(given)


def _timeouts(init_s: float, heartbeat_s: float) -> dict[str, int]:
    """The timeout arguments this jax's initialize takes (whole seconds)."""
    known = inspect.signature(jax.distributed.initialize).parameters
    wanted = {"initialization_timeout": init_s, "heartbeat_timeout_seconds": heartbeat_s}
    return {k: math.ceil(v) for k, v in wanted.items() if k in known}


def _give_up(where: str, timeout_s: float) -> None:
    print(
        f"styleavatar-jax: error: --distributed: not all processes joined within {timeout_s:g} "
        f"s ({where}). Is process 0 running and reachable at the coordinator address, is "
        "every process started with the same process count and its own process id, and is "
        "the port free? (--distributed-timeout waits longer)",
        file=sys.stderr,
        flush=True,
    )
    os._exit(EXIT_TIMEOUT)


def _check_agreement(given: dict) -> None:
    """Every process was started with the same process count (one that joined a coordinator
    expecting another count would otherwise train on a wrong share of the batch).

    The check is a collective over every device of every process, the group the training
    steps use: on CPU, gloo gives a new group 30 s for all its processes to arrive, and
    setting it up here, while the processes are in step, spares the first training step that
    limit (process 0 may compile a snapshot sampler before it)."""
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    (n, n_where), (i, _) = given["num_processes"], given["process_id"]
    mesh = Mesh(np.array(jax.devices()), ("all",))
    local = np.tile(np.array([[n, i]], np.int32), (jax.local_device_count(), 1))
    rows = jax.make_array_from_process_local_data(NamedSharding(mesh, P("all")), local)
    gather = jax.jit(lambda x: x, out_shardings=NamedSharding(mesh, P()))
    seen = np.unique(np.asarray(gather(rows)), axis=0)  # [(count, id)] of every process
    if jax.process_count() != n or np.any(seen[:, 0] != n):
        counts = ", ".join(f"process {p}: {c}" for c, p in sorted(seen, key=lambda r: r[1]))
        raise ValueError(
            f"the processes were started with different counts ({counts}; {n_where} here, "
            f"{jax.process_count()} at the coordinator): start every process with the same count"
        )
