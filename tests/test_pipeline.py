"""Input pipeline: determinism, epochs, flips, resumption, sharding and host slicing."""

import threading

import jax
import numpy as np
import PIL.Image
import pytest
from jax.sharding import PartitionSpec as P

from styleavatar_jax import cameras
from styleavatar_jax.data import eg3d_format
from styleavatar_jax.data.pipeline import InputPipeline, batch_plan, epoch_permutation

N, RES = 24, 16


def write_dataset(root, n=N):
    rng = np.random.default_rng(0)
    yaw, pitch = rng.uniform(-150, 150, n), rng.uniform(-60, 60, n)
    pose = cameras.pose_from_angles(np.radians(yaw), np.radians(pitch), 2.7, (0, 0, 0.2))
    labels = np.asarray(cameras.make_label(pose, cameras.fov_to_intrinsics(18.837)))
    writer = eg3d_format.EG3DWriter(root)
    for i in range(n):
        image = rng.integers(0, 256, (RES, RES, 3), dtype=np.uint8)
        writer.write(i, image, labels[i], {"identity": i // 3})
    writer.finish()


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("eg3d")
    write_dataset(root)
    return eg3d_format.open_eg3d(root)


def batches(pipe, steps):
    return [pipe.batch_at(s) for s in steps]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]), err_msg=k)


def test_batch_contents_and_determinism(src):
    with InputPipeline(src, 8, seed=1) as a, InputPipeline(src, 8, seed=1, threads=0) as b:
        first = a.batch_at(0)
        assert {k: (v.shape, v.dtype) for k, v in first.items()} == {
            "image": ((8, RES, RES, 3), np.uint8),
            "label": ((8, 25), np.float32),
            "yaw": ((8,), np.float32),
            "pitch": ((8,), np.float32),
            "identity": ((8,), np.int32),
            "index": ((8,), np.int32),
            "flipped": ((8,), np.bool_),
        }
        assert_batches_equal(batches(a, range(5)), batches(b, range(5)))
        np.testing.assert_array_equal(first["identity"], first["index"] // 3)
        with InputPipeline(src, 8, seed=2) as c:
            assert not np.array_equal(c.batch_at(0)["index"], first["index"])


def test_every_index_once_per_epoch(src):
    # B = 10 does not divide N = 24: batches straddle epochs, nothing is dropped.
    stream = np.concatenate([batch_plan(N, 10, 5, step, True)[0] for step in range(12)])
    epochs = stream[: 5 * N].reshape(5, N)
    for e, order in enumerate(epochs):
        assert sorted(order) == list(range(N))
        np.testing.assert_array_equal(order, epoch_permutation(N, 5, e))
    assert len({tuple(o) for o in epochs}) == 5  # a fresh permutation each epoch
    with InputPipeline(src, 8, seed=5) as pipe:  # 3 steps per epoch
        epoch1 = np.concatenate([pipe.batch_at(s)["index"] for s in (3, 4, 5)])
        np.testing.assert_array_equal(epoch1, epoch_permutation(N, 5, 1))


def test_flip_mirrors_image_label_and_yaw(src):
    with InputPipeline(src, 24, seed=0) as pipe:
        got = batches(pipe, range(10))
    flipped = np.concatenate([b["flipped"] for b in got])
    assert 0.35 < flipped.mean() < 0.65 and flipped.any() and not flipped.all()
    for b in got[:2]:
        for row, i in enumerate(b["index"]):
            item = src[i]
            f = b["flipped"][row]
            image = item["image"][:, ::-1] if f else item["image"]
            label = np.asarray(cameras.mirror_label(item["label"])) if f else item["label"]
            np.testing.assert_array_equal(b["image"][row], image)
            np.testing.assert_array_equal(b["label"][row], label)
            assert b["yaw"][row] == (-item["yaw"] if f else item["yaw"])
            assert b["pitch"][row] == item["pitch"]
            # The flipped label's camera has the negated yaw.
            yaw, _, _ = cameras.angles_from_pose(cameras.split_label(b["label"][row])[0])
            np.testing.assert_allclose(np.degrees(yaw), b["yaw"][row], atol=1e-3)
    with InputPipeline(src, 24, seed=0, flip=False) as pipe:
        assert not pipe.batch_at(0)["flipped"].any()


def test_restart_replays_the_run(src):
    with InputPipeline(src, 8, seed=7) as pipe:
        with pipe.iterate(0, prefetch=2) as it:
            run = [next(it) for _ in range(7)]
        with pipe.iterate(4, prefetch=3) as it:
            resumed = [next(it) for _ in range(3)]
            assert it.next_step == 7
        with pipe.iterate(4, prefetch=0) as it:
            unthreaded = [next(it) for _ in range(3)]
    assert_batches_equal(resumed, run[4:])
    assert_batches_equal(unthreaded, run[4:])
    assert not [t for t in threading.enumerate() if t.name.startswith(("prefetch", "decode"))]


def test_sharded_batches_equal_host_batches(src):
    assert jax.device_count() == 8
    mesh = jax.make_mesh((8,), ("data",))
    one = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    with (
        InputPipeline(src, 16, seed=3) as host,
        InputPipeline(src, 16, seed=3, mesh=mesh) as eight,
        InputPipeline(src, 16, seed=3, mesh=one) as single,
    ):
        sharded = batches(eight, [0, 2])
        for b in sharded:
            assert all(v.sharding.spec == P("data") for v in b.values())
            assert b["image"].addressable_shards[0].data.shape == (2, RES, RES, 3)
        assert_batches_equal(sharded, batches(host, [0, 2]))
        assert_batches_equal(batches(single, [0, 2]), batches(host, [0, 2]))


def test_two_hosts_concatenate_to_the_global_batch(src):
    kw = dict(batch_size=12, seed=4)
    with (
        InputPipeline(src, **kw) as whole,
        InputPipeline(src, **kw, process_index=0, process_count=2) as h0,
        InputPipeline(src, **kw, process_index=1, process_count=2) as h1,
    ):
        for step in (0, 3):
            a, b = h0.batch_at(step), h1.batch_at(step)
            assert a["image"].shape[0] == 6
            joined = {k: np.concatenate([a[k], b[k]]) for k in a}
            assert_batches_equal([joined], [whole.batch_at(step)])


def test_bad_configurations(src):
    mesh = jax.make_mesh((8,), ("data",))
    with pytest.raises(ValueError, match="batch_size=12 is not divisible by the 8 devices"):
        InputPipeline(src, 12, seed=0, mesh=mesh, threads=0)
    with pytest.raises(ValueError, match="batch_size=15 is not divisible by the 2 processes"):
        InputPipeline(src, 15, seed=0, process_index=0, process_count=2, threads=0)
    with pytest.raises(ValueError, match="overrides are for mesh=None"):
        InputPipeline(src, 16, seed=0, mesh=mesh, process_index=1, process_count=2, threads=0)
    with pytest.raises(ValueError, match="needs a 'data' axis"):
        InputPipeline(src, 16, seed=0, mesh=jax.make_mesh((8,), ("x",)), threads=0)


def test_decode_error_reaches_the_consumer(tmp_path):
    write_dataset(tmp_path, n=4)
    PIL.Image.new("RGBA", (RES, RES)).save(tmp_path / "00000/img00000002.png")
    with InputPipeline(eg3d_format.open_eg3d(tmp_path), 4, seed=0) as pipe:
        it = pipe.iterate(0)
        with pytest.raises(ValueError, match="img00000002.png\\): image mode is 'RGBA'"):
            next(it)
        it.close()
    assert not [t for t in threading.enumerate() if t.name.startswith(("prefetch", "decode"))]
