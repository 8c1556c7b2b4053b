"""Peak device memory of the training phases, estimated from the compiled programs.

    python bench/memory.py [--configs avatar256] [--batch 4] [--accum 1,4] [--neural-res 64,128]

No GPU needed: each phase (Gmain, Greg, Dmain, Dreg) is lowered from abstract shapes and
compiled for the local backend, and XLA's memory analysis of the program gives its
arguments (state, batch), outputs, aliased (donated) bytes and temporaries. A phase's
peak ≈ arguments + outputs − aliased + temporaries; the step's peak is the largest phase.
On CPU this is XLA:CPU's buffer assignment, an estimate of what a GPU's would be (fusion
differs; the GPU adds cuDNN/cuBLAS workspaces and its allocator's slack): a measured
GPU figure (bench/train_step.py, peak_bytes_in_use) supersedes it. `--accum K` splits the
batch into K micro-batches (config.train.accum_steps), as avatar256's default (batch 16
= 4 × 4).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from styleavatar_jax.runtime import data_mesh  # noqa: E402
from styleavatar_jax.train import step as train_step  # noqa: E402
from styleavatar_jax.train.config import training_configs  # noqa: E402
from styleavatar_jax.train.state import init_state, make_networks  # noqa: E402
from styleavatar_jax.typed_config import load_config_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"avatar256": "configs/avatar256.py", "avatar512": "configs/avatar512.py",
           "mannequin64": "configs/mannequin64.py", "tiny": "configs/tiny.py"}  # fmt: skip
GIB = 2**30


def phase_memory(name: str, batch: int, accum: int, neural_res: int | None) -> list[dict]:
    cfg = load_config_file(str(ROOT / CONFIGS[name]),
                           [f"--config.train.batch_size={batch}",
                            f"--config.train.accum_steps={accum}"])  # fmt: skip
    tc = training_configs(cfg)
    nets = make_networks(tc.generator, tc.discriminator, tc.train, tc.pose)
    mesh = data_mesh(jax.devices()[:1])
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state = jax.eval_shape(lambda: init_state(nets, jax.random.key(0)))
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), state)
    res = tc.discriminator.img_resolution
    batch_spec = {"image": jax.ShapeDtypeStruct((batch, res, res, 3), jnp.uint8),
                  "label": jax.ShapeDtypeStruct((batch, 25), jnp.float32)}  # fmt: skip
    sched, nres = train_step.schedule_at(tc.train, 0)
    nres = neural_res or nres
    key = jax.eval_shape(lambda: jax.random.key(1))
    rows = []
    for phase in ("Gmain", "Greg", "Dmain", "Dreg"):
        t0 = time.perf_counter()
        compiled = train_step.phase_fn(nets, mesh, phase, nres).lower(
            state, batch_spec, key, sched).compile()  # fmt: skip
        m = compiled.memory_analysis()
        args, out = m.argument_size_in_bytes, m.output_size_in_bytes
        alias, temp = m.alias_size_in_bytes, m.temp_size_in_bytes
        rows.append(dict(config=name, batch=batch, accum=accum, neural_res=nres, phase=phase,
                         arguments_gib=args / GIB, outputs_gib=out / GIB,
                         aliased_gib=alias / GIB, temporaries_gib=temp / GIB,
                         peak_gib=(args + out - alias + temp) / GIB,
                         compile_s=time.perf_counter() - t0))  # fmt: skip
        r = rows[-1]
        print(
            f"{name} batch {batch} (accum {accum}) neural {nres}² {phase:5s}: peak "
            f"{r['peak_gib']:.2f} GiB = arguments {r['arguments_gib']:.2f} + outputs "
            f"{r['outputs_gib']:.2f} - aliased {r['aliased_gib']:.2f} + temporaries "
            f"{r['temporaries_gib']:.2f} (compiled in {r['compile_s']:.0f} s)",
            flush=True,
        )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="avatar256")
    p.add_argument("--batch", default="4", help="comma-separated global batch sizes")
    p.add_argument("--accum", default="1", help="comma-separated accumulation steps")
    p.add_argument("--neural-res", default="", help="comma-separated (default: the config's)")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    print(f"backend {jax.default_backend()} ({platform.processor() or platform.machine()}), "
          f"jax {jax.__version__}")  # fmt: skip
    rows = []
    ress = [int(r) for r in args.neural_res.split(",") if r] or [None]
    for name in args.configs.split(","):
        for b in (int(x) for x in args.batch.split(",")):
            for a in (int(x) for x in args.accum.split(",")):
                for r in ress:
                    phases = phase_memory(name, b, a, r)
                    top = max(phases, key=lambda x: x["peak_gib"])
                    print(f"=> {name} batch {b} accum {a}: step peak {top['peak_gib']:.2f} GiB "
                          f"({top['phase']})", flush=True)  # fmt: skip
                    rows += phases
    if args.json:
        Path(args.json).write_text(json.dumps([dataclasses.asdict(r) if dataclasses.is_dataclass(r)
                                               else r for r in rows], indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
