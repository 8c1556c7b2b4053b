"""Dataset synthesis on a Ray cluster: `python -m data_gen.run ... --ray [ADDRESS]`.

The same work as the single-process run, spread over actors (data_gen.work):

    driver   checks the settings, plans the chunks left to make (one Ray Data row each: the
             chunk's work items), collects the actors' counts, then writes dataset.json,
             rejected.jsonl and manifest.json from what is on disk (data_gen.output.finish)
    actors   `ChunkActor`: loads the pipeline (and the CLIP scorer) once, then makes the
             chunks it is given and writes their images; one GPU each on a GPU cluster

Images are the single-process run's, byte for byte at the same --batch and dtype. Every
write is atomic and an image on disk is never made again, so:
- an actor that dies (a lost node, out of memory) is restarted by Ray and its chunk retried
  (`RETRIES`): the chunk is generated again whole and only its missing images are written;
- a driver that is killed leaves whole files only: the same command makes the missing
  chunks and finishes the set.
Actors write into --out themselves: on a multi-node cluster it must be a shared file system
at the same path on every node, and every node needs the package, the [datagen] extra and
the models (hub ids are fetched into each node's cache; folders must exist at that path).
This module imports Ray only when called, so data_gen works without the [ray] extra.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import socket
from pathlib import Path

import numpy as np

from data_gen.config import Job
from data_gen.pipelines import device_dtype, torch_device
from data_gen.work import (
    ChunkMaker,
    Summary,
    WorkItem,
    conclude,
    plan_items,
    plan_run,
    progress_bar,
)
from styleavatar_jax.files import as_path

RETRIES = 3  # restarts of each actor, and retries of the chunk a dead actor was making
CONNECT_TIMEOUT = 5.0  # seconds for a HOST:PORT address to accept a connection


def require_ray():
    """-> the ray module (with Ray Data); ValueError naming --ray when it is not installed."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ValueError(f"--ray: Ray is not installed ({e}); install the [ray] extra: "
                         "pip install 'styleavatar-jax[ray]' (in a checkout: pip install -e "
                         "'.[ray]')") from None  # fmt: skip
    return ray


def check_address(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """--ray ADDRESS: '' (a local Ray, or $RAY_ADDRESS), 'auto', 'local', or HOST:PORT, which
    must accept a TCP connection within `timeout` s (ray.init would retry for minutes)."""
    if address in ("", "auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--ray {address}: expected HOST:PORT (the head node's address, "
                         "e.g. 10.0.0.1:6379), auto, or nothing for a local Ray")  # fmt: skip
    try:
        socket.create_connection((host, int(port)), timeout).close()
    except OSError as e:
        raise ValueError(f"--ray {address}: no Ray cluster answers there ({e}); start one "
                         "with `ray start --head` or correct the address") from None  # fmt: skip


def connect(address: str) -> contextlib.ExitStack:
    """--ray ADDRESS -> a context that holds the Ray connection and closes it on exit. A
    session already open in this process (tests, notebooks) is used as it is and kept."""
    ray = require_ray()
    check_address(address)
    session = contextlib.ExitStack()
    if ray.is_initialized():
        return session
    try:
        ray.init(address=address or None)
    except ConnectionError as e:
        raise ValueError(f"--ray {address}: {e}") from None
    session.callback(ray.shutdown)
    return session


def actor_device(device: str, gpus: int) -> str:
    """--device and the cluster's GPU count -> the actors' device ('auto': cuda with GPUs)."""
    if device == "auto":
        return "cuda" if gpus else "cpu"
    if device.startswith("cuda") and not gpus:
        raise ValueError(f"--device {device}: the Ray cluster has no GPUs")
    return device


def exit_once(index: int, marker: str, writing: int) -> None:
    """Test hook (tests/test_data_gen_ray.py; `make_dataset(exit_at=...)`): the first process
    about to write image `index` creates the file `marker` and ends at once, as a crash
    would (os._exit: no cleanup, no exception). The restarted actor finds the marker and
    goes on."""
    if writing == index and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(17)


class ChunkActor:
    """Ray Data callable class: one per actor, holds the loaded pipeline (ChunkMaker)."""

    def __init__(self, job: Job, out: str, device: str, batch: int,
                 exit_at: tuple[int, str] | None = None):  # fmt: skip
        """exit_at: (image index, marker path) for the test hook `exit_once`, or None."""
        hook = functools.partial(exit_once, *exit_at) if exit_at else None
        self.maker = ChunkMaker.load(job, as_path(out), *torch_device(device), batch,
                                     before_write=hook)  # fmt: skip

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """rows["items"] [R]: each a chunk's work items (dicts) -> generated, rejected,
        given_up [R] (int64): what making each chunk did (data_gen.work.Summary)."""
        made = [self.maker([WorkItem.from_dict(d) for d in items]) for items in rows["items"]]
        return {k: np.array([getattr(m, k) for m in made], np.int64)
                for k in ("generated", "rejected", "given_up")}  # fmt: skip


def make_dataset(job: Job, out: str | Path, num_images: int, *, batch: int = 4,
                 device: str = "auto", actors: int | None = None, progress: bool = True,
                 exit_at: tuple[int, str] | None = None) -> Summary:  # fmt: skip
    """Write (or finish, or extend) the dataset in `out` on the connected Ray cluster (module
    doc; run.make_dataset's result) -> Summary.

    actors: how many pipelines run at once (default: one per GPU of the cluster, else 1),
    each with one GPU (a GPU cluster) or one CPU. exit_at: the test hook `exit_once`.
    """
    import ray

    out = as_path(out)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    device = actor_device(device, gpus)
    chunks, before = plan_run(job, out, num_images, batch, device_dtype(device))
    if chunks:
        rows = [{"items": [dataclasses.asdict(it) for it in plan_items(job, c)]} for c in chunks]
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours below
        resources = dict(num_gpus=1) if gpus else dict(num_cpus=1)
        made = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            ChunkActor, batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(actors or max(gpus, 1), len(rows))),
            fn_constructor_kwargs=dict(job=job, out=str(out), device=device, batch=batch,
                                       exit_at=exit_at),
            # Ray Data restarts dead actors and retries their chunks without end: bounded, so
            # that a chunk that kills every actor it meets (out of memory) stops the run.
            ray_remote_args_fn=lambda: dict(max_restarts=RETRIES, max_task_retries=RETRIES),
            **resources,
        )  # fmt: skip
        with progress_bar(num_images, len(before.finished), progress) as bar:
            for row in made.iter_rows():
                bar.update(row["generated"] + row["given_up"])
    return conclude(out, num_images, before)
