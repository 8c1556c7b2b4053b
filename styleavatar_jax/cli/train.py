"""`train` and `demo` subcommands.

    styleavatar-jax train --config configs/NAME.py --workdir DIR [--resume] [--init-from PKL]
        [--config.train.total_kimg=0.1 --config.train.batch_size=8 ...] [--distributed]
    styleavatar-jax demo [--out out/demo] [--minutes 10] [--fresh]

Multi-host (TPU pod slice, several GPU or CPU hosts): run the same command on every host
with --distributed (styleavatar_jax.distributed: the coordinator, process count and id from
--coordinator / --num-processes / --process-id, else JAX_COORDINATOR_ADDRESS /
JAX_NUM_PROCESSES / JAX_PROCESS_ID, else the TPU or SLURM environment).
"""

from __future__ import annotations

from pathlib import Path

from styleavatar_jax.cli.args import (
    check_output,
    distributed_flags,
    join_processes,
    positive_float,
    positive_int,
)
from styleavatar_jax.typed_config import load_config_file


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="train a tri-plane GAN (EG3D / StyleAvatar3D)")
    p.add_argument("--config", required=True, help="configs/NAME.py[:arg]")
    p.add_argument("--workdir", required=True, help="run directory (checkpoints, logs)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --workdir from its latest checkpoint")  # fmt: skip
    p.add_argument("--init-from", metavar="PKL", help="start from an EG3D network .pkl")
    p.add_argument("--check-all-images", action="store_true",
                   help="decode every image first (default: 64 spread over the set)")  # fmt: skip
    p.add_argument("--max-minutes", type=positive_float, help="stop (and save) after this long")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--compile-cache", metavar="DIR",
                   help="keep compiled XLA programs in DIR (e.g. ~/.cache/styleavatar-jax/xla), "
                        "so a restart or --resume on this machine skips compiling")  # fmt: skip
    distributed_flags(p)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("demo", help="train a small avatar GAN on CPUs and show it learned")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--minutes", type=positive_float, default=10.0, help="training time budget")
    p.add_argument("--fresh", action="store_true", help="also remake the datasets")
    p.add_argument("--train-ids", type=positive_int, default=120,
                   help="mannequin identities in the training set (8 views each)")  # fmt: skip
    p.add_argument("--heldout-ids", type=positive_int, default=32,
                   help="identities in the held-out set the metric uses")  # fmt: skip
    p.set_defaults(fn=cmd_demo)


def cmd_train(args, overrides) -> int:
    from styleavatar_jax.train.config import training_configs

    cfg = load_config_file(args.config, overrides)
    training_configs(cfg)  # bad config fields fail before JAX starts
    check_output(args.workdir, "--workdir", folder=True)
    if args.compile_cache:
        args.compile_cache = Path(args.compile_cache).expanduser().absolute()
        check_output(args.compile_cache, "--compile-cache", folder=True)
    if args.init_from and not Path(args.init_from).is_file():
        raise FileNotFoundError(f"--init-from={args.init_from}: no such file")
    join_processes(args)
    import jax

    from styleavatar_jax.runtime import exit_code
    from styleavatar_jax.train import loop
    from styleavatar_jax.train.metrics import metric_callbacks

    if args.compile_cache:  # jax's persistent cache; programs compiled in < 1 s are not kept
        args.compile_cache.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(args.compile_cache))

    # In-training metrics on process 0 only (the others wait at the next step's collective).
    callbacks = metric_callbacks(cfg, args.workdir) if jax.process_index() == 0 else []
    try:
        r = loop.train(cfg, args.workdir, resume=args.resume, init_from=args.init_from,
                       max_seconds=None if args.max_minutes is None else args.max_minutes * 60,
                       progress=not args.no_progress, check_all_images=args.check_all_images,
                       callbacks=callbacks)  # fmt: skip
    except loop.TrainingDiverged as e:
        print(f"styleavatar-jax train: {e}")
        return 3
    print(f"{r.status} at step {r.step} ({r.kimg:.3f} kimg); run directory {r.workdir}")
    return exit_code(r.status)  # 130 / 143 after SIGINT / SIGTERM (runtime.StopOnSignal)


def cmd_demo(args, overrides) -> int:
    from styleavatar_jax.cli.demo import DemoSettings, run_demo

    check_output(args.out, "--out", folder=True)
    settings = DemoSettings(out=Path(args.out), minutes=args.minutes, train_ids=args.train_ids,
                            heldout_ids=args.heldout_ids)  # fmt: skip
    run_demo(settings, fresh=args.fresh, overrides=overrides)
    return 0
