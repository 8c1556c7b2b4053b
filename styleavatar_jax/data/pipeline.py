"""Input pipeline: seeded epoch shuffles and flips, per-host slices, sharded batches, prefetch.

Step arithmetic (N images, global batch B, P processes). The sample stream is the
concatenation of one permutation of the dataset per epoch:

    global sample   s = step * B + j          (j: row of the global batch, 0 <= j < B)
    epoch           e = s // N,  position p = s % N
    image index       = epoch_permutation(N, seed, e)[p]
    flipped           = epoch_flips(N, seed, e)[p]   (p = 0.5 each, if flips are on)

Every image appears exactly once per epoch (a batch may straddle two epochs; nothing is
dropped), the epoch of step k is k * B // N, and `batch_at(step)` depends only on
(seed, step): a run resumed at step k sees the batches an uninterrupted run sees.
Process h decodes only rows [h * B/P, (h + 1) * B/P) of each global batch; with a mesh
the rows become one jax.Array sharded over the mesh axis 'data'.

A flipped row holds the mirrored image (left <-> right), the label of the mirrored camera
(source.mirror_labels: EG3D's mirror_dataset.py rule, = cameras.mirror_label) and negated yaw.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from styleavatar_jax.data.source import ImageSource, mirror_labels

Batch = dict[str, np.ndarray | jax.Array]


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the n images in `epoch`: int64 [n], a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch, 0]).permutation(n)


def epoch_flips(n: int, seed: int, epoch: int) -> np.ndarray:
    """Whether position p of `epoch` is flipped: bool [n], each True with probability 0.5."""
    return np.random.default_rng([seed, epoch, 1]).random(n) < 0.5


def stream_take(n: int, batch_size: int, step: int, per_epoch) -> np.ndarray:
    """Row j of global batch `step` -> per_epoch(e)[p], where s = step * B + j and e, p =
    divmod(s, n) (module docstring): [B], the dtype of per_epoch's arrays."""
    s = step * batch_size + np.arange(batch_size, dtype=np.int64)
    epoch, pos = np.divmod(s, n)
    out = None
    for e in np.unique(epoch):
        rows = epoch == e
        values = per_epoch(int(e))
        out = np.empty(batch_size, values.dtype) if out is None else out
        out[rows] = values[pos[rows]]
    return out


def batch_plan(
    n: int, batch_size: int, seed: int, step: int, flip: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Global batch `step` -> image indices int64 [B], flipped bool [B] (module docstring)."""
    index = stream_take(n, batch_size, step, lambda e: epoch_permutation(n, seed, e))
    if not flip:
        return index, np.zeros(batch_size, bool)
    return index, stream_take(n, batch_size, step, lambda e: epoch_flips(n, seed, e))


def assemble(items: list[dict], flipped: np.ndarray) -> dict[str, np.ndarray]:
    """Decoded source items [b] and flips bool [b] -> host batch (see InputPipeline)."""
    image = np.stack([it["image"] for it in items])  # [b, H, W, 3]
    label = np.stack([it["label"] for it in items]).astype(np.float32)
    yaw = np.array([it["yaw"] for it in items], np.float32)
    image[flipped] = image[flipped, :, ::-1]
    label[flipped] = mirror_labels(label[flipped])
    yaw[flipped] = -yaw[flipped]
    return dict(
        image=image,
        label=label,
        yaw=yaw,
        pitch=np.array([it["pitch"] for it in items], np.float32),
        identity=np.array([it["identity"] for it in items], np.int32),
        index=np.array([it["index"] for it in items], np.int32),
        flipped=np.asarray(flipped, bool),
    )


class InputPipeline:
    """Batches of an ImageSource: dict(image uint8 [B, H, W, 3], label float32 [B, 25],
    yaw, pitch float32 [B] (degrees), identity int32 [B], index int32 [B] (source index),
    flipped bool [B]); jax.Arrays sharded over mesh axis 'data', or this process's rows
    [B/P, ...] as numpy when mesh is None.

    threads: decoding threads per batch (0: decode in the calling thread).
    process_index/process_count: default jax's; override only to simulate hosts (no mesh).
    """

    def __init__(
        self,
        source: ImageSource,
        batch_size: int,
        *,
        seed: int,
        flip: bool = True,
        mesh: Mesh | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
        threads: int = 8,
    ):
        self.source, self.batch_size, self.seed, self.flip = source, batch_size, seed, flip
        self.mesh = mesh
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if batch_size <= 0 or seed < 0:
            raise ValueError(f"batch_size={batch_size} must be > 0 and seed={seed} >= 0")
        if not 0 <= self.process_index < self.process_count:
            raise ValueError(
                f"process_index={self.process_index} not in [0, process_count={self.process_count})"
            )
        if batch_size % self.process_count:
            raise ValueError(
                f"batch_size={batch_size} is not divisible by the {self.process_count} processes"
            )
        per_host = batch_size // self.process_count
        self.rows = slice(self.process_index * per_host, (self.process_index + 1) * per_host)
        self.sharding = None
        if mesh is not None:
            if "data" not in mesh.axis_names:
                raise ValueError(f"the mesh needs a 'data' axis, it has {mesh.axis_names}")
            if batch_size % mesh.shape["data"]:
                raise ValueError(
                    f"batch_size={batch_size} is not divisible by the {mesh.shape['data']} "
                    "devices of the mesh's 'data' axis"
                )
            self.sharding = NamedSharding(mesh, P("data"))
            held = self.sharding.addressable_devices_indices_map((batch_size,)).values()
            lo = min(s[0].start or 0 for s in held)
            hi = max(batch_size if s[0].stop is None else s[0].stop for s in held)
            if (lo, hi) != (self.rows.start, self.rows.stop):
                raise ValueError(
                    f"process {self.process_index}/{self.process_count} decodes rows "
                    f"{self.rows.start}:{self.rows.stop} but its devices hold rows {lo}:{hi}; "
                    "process_index/process_count overrides are for mesh=None only"
                )
        self._pool = ThreadPoolExecutor(threads, "decode") if threads > 0 else None

    def plan(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Global batch `step` -> indices int64 [B], flipped bool [B]."""
        return batch_plan(len(self.source), self.batch_size, self.seed, step, self.flip)

    def host_batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's rows of global batch `step`, decoded, as numpy [B/P, ...]."""
        index, flipped = (a[self.rows] for a in self.plan(step))
        get = self.source.__getitem__
        items = list(self._pool.map(get, index) if self._pool else map(get, index))
        return assemble(items, flipped)

    def batch_at(self, step: int) -> Batch:
        """Global batch `step`: sharded jax.Arrays with a mesh, else host numpy."""
        local = self.host_batch(step)
        if self.sharding is None:
            return local
        return {
            k: jax.make_array_from_process_local_data(
                self.sharding, v, (self.batch_size,) + v.shape[1:]
            )
            for k, v in local.items()
        }

    def iterate(self, start_step: int = 0, prefetch: int = 2) -> Prefetcher:
        """Batches start_step, start_step + 1, ... made `prefetch` ahead in a thread
        (0: made on demand). Close it (or use `with`) to stop the thread."""
        return Prefetcher(self.batch_at, start_step, prefetch)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> InputPipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Prefetcher(Iterator[Batch]):
    """make(step) for step = start, start + 1, ..., computed up to `depth` ahead by one
    background thread; errors there are raised by `next`. `next_step`: the step the
    next `next` returns (what a checkpoint stores to resume)."""

    def __init__(self, make: Callable[[int], Batch], start: int, depth: int):
        self._make, self.next_step, self._depth = make, start, depth
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._thread = None
        if depth > 0:
            self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        step = self.next_step
        while not self._stop.is_set():
            try:
                item = (step, self._make(step), None)
            except Exception as e:  # handed to the consumer, which raises it
                item = (step, None, e)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.05)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return
            step += 1

    def __next__(self) -> Batch:
        if self._thread is None:
            batch = self._make(self.next_step)
        else:
            if self._stop.is_set():
                raise StopIteration
            step, batch, error = self._queue.get()
            if error is not None:
                self.close()
                raise error
            assert step == self.next_step
        self.next_step += 1
        return batch

    def close(self) -> None:
        """Stop the thread and wait for it (it finishes the batch it is making)."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread.join()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
