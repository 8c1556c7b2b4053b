"""Multi-process training on CPU: steady-state s/step of `train --distributed` as 2 processes
× 2 CPU devices against 1 process × 4 CPU devices, on the same global batch.

    python bench/multiprocess_step.py [--steps 30] [--skip 5] [--optimize] [--json FILE]

configs/tiny.py (batch 4) on 32 random 64² images (fade_compile.random_dataset), every run a
fresh `python -m styleavatar_jax.cli train` (JAX_PLATFORMS=cpu, XLA's host device count set
per process), the 2 processes joined as tests/test_multiprocess.py launches them
(JAX_COORDINATOR_ADDRESS on 127.0.0.1 and a free port; collectives over gloo). Compilation is
left out: process 0 prints a line every config.run.log_steps (5) steps, which this script
stamps as it arrives, and s/step is taken between the first line at or after step --skip
(step 0 runs every phase, so all are compiled by then) and the last. XLA runs with most
optimisations off, as the train tests do (JAX_DISABLE_MOST_OPTIMIZATIONS: compiling the 5
programs takes minutes on 2 loaded cores otherwise); --optimize for the full pipeline, which
runs the steps faster. CPU s/step is the
CPU time of all the run's processes between the same two lines (psutil), the figure to
compare on a shared machine. For the record, not a target: on one machine the 2 processes
share its cores and add gloo's all-reduce, so the ratio prices the multi-host machinery.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from fade_compile import random_dataset

ROOT = Path(__file__).resolve().parent.parent
BATCH = 4  # configs/tiny.py's
STEP_LINE = re.compile(r"^step (\d+) ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU time of the processes and their children so far."""
    total = 0.0
    for p in procs:
        for q in [p, *p.children(recursive=True)]:
            try:
                t = q.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
    return total


def run(processes: int, devices: int, data: Path, workdir: Path, steps: int, skip: int,
        optimize: bool, timeout: float) -> dict:  # fmt: skip
    """One training run as `processes` × `devices` -> its figures."""
    argv = ["train", "--config", "configs/tiny.py", "--workdir", str(workdir),
            f"--config.data.path={data}", f"--config.train.total_kimg={steps * BATCH / 1000}",
            "--config.run.snapshot_kimg=0", "--config.run.checkpoint_kimg=1000",
            "--no-progress"]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_DISABLE_MOST_OPTIMIZATIONS="0" if optimize else "1")  # fmt: skip
    if processes > 1:
        argv.append("--distributed")
        env |= dict(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}",
                    JAX_NUM_PROCESSES=str(processes))  # fmt: skip
    cmd = [sys.executable, "-m", "styleavatar_jax.cli", *argv]
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=dict(env, JAX_PROCESS_ID=str(i)), text=True,
                              stdout=subprocess.PIPE if i == 0 else subprocess.DEVNULL,
                              stderr=subprocess.STDOUT if i == 0 else subprocess.DEVNULL)
             for i in range(processes)]  # fmt: skip
    handles = [psutil.Process(p.pid) for p in procs]
    stamps, lines = {}, []  # step -> (wall s, CPU s); process 0's output

    def read():
        for line in procs[0].stdout:
            lines.append(line)
            if m := STEP_LINE.match(line):
                stamps[int(m.group(1))] = (time.perf_counter(), cpu_seconds(handles))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        codes = [p.wait(timeout=max(1.0, start + timeout - time.perf_counter())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    reader.join(10)
    wall = time.perf_counter() - start
    if any(codes):
        raise RuntimeError(f"{processes} × {devices}: exit codes {codes}:\n"
                           + "".join(lines)[-3000:])  # fmt: skip
    timed = sorted(s for s in stamps if s >= skip)
    if len(timed) < 2:
        raise RuntimeError(f"{processes} × {devices}: fewer than 2 step lines from step {skip} "
                           f"on ({sorted(stamps)}); raise --steps")  # fmt: skip
    (a, b), n = (timed[0], timed[-1]), timed[-1] - timed[0]
    first = min(stamps)
    return dict(processes=processes, devices_per_process=devices, steps=steps, optimize=optimize,
                timed_steps=f"{a}-{b}", s_per_step=(stamps[b][0] - stamps[a][0]) / n,
                cpu_s_per_step=(stamps[b][1] - stamps[a][1]) / n,
                to_first_line_s=stamps[first][0] - start, first_line_step=first,
                run_s=wall)  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=30, help="training steps of each run")
    p.add_argument("--skip", type=int, default=5, help="time from the first log line at or "
                   "after this step (compilation before it)")  # fmt: skip
    p.add_argument("--optimize", action="store_true", help="XLA's full optimisation pipeline")
    p.add_argument("--timeout", type=float, default=600, help="seconds per run")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    # SIGTERM (`timeout`) as an exception: the runs' processes are killed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = random_dataset(Path(tmp) / "data" / "ds")
        for processes, devices in ((1, 4), (2, 2)):
            row = run(processes, devices, data, Path(tmp) / f"run{processes}", args.steps,
                      args.skip, args.optimize, args.timeout)  # fmt: skip
            row["load_average"] = os.getloadavg()
            rows.append(row)
            print(f"{processes} process(es) × {devices} devices: {row['s_per_step']:.3f} s/step "
                  f"wall, {row['cpu_s_per_step']:.3f} CPU s/step (steps {row['timed_steps']}); "
                  f"first log line (step {row['first_line_step']}) after "
                  f"{row['to_first_line_s']:.0f} s, run {row['run_s']:.0f} s; load average "
                  f"{row['load_average'][0]:.2f}", flush=True)  # fmt: skip
    one, two = rows
    print(
        f"2 × 2 vs 1 × 4: {two['s_per_step'] / one['s_per_step']:.2f}× the wall s/step, "
        f"{two['cpu_s_per_step'] / one['cpu_s_per_step']:.2f}× the CPU s/step"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
