#!/usr/bin/env python3
"""Bootstrap and run, with nothing but python3 on the machine.

    python3 scripts/dev.py demo    convert the shipped EG3D snapshot, check it, write a grid
    python3 scripts/dev.py test    run the test suite (what CI runs)

Creates .venv (if missing or stale) with the exact tested set in requirements/ci.txt plus
this package (editable), then runs the command inside it. Extra arguments go to pytest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
REQS = ROOT / "requirements" / "ci.txt"
STAMP = VENV / ".requirements.sha256"


def python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv() -> None:
    digest = hashlib.sha256(REQS.read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if python().exists() and STAMP.exists() and STAMP.read_text() == digest:
        return
    print(f"setting up {VENV} (one time, ~1 min) ...", flush=True)
    if not python().exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(python()), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.check_call([*pip, "-r", str(REQS)])
    subprocess.check_call([*pip, "--no-deps", "-e", str(ROOT)])
    STAMP.write_text(digest)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    ensure_venv()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if argv[0] == "test":
        cmd = [str(python()), "-m", "pytest", "-q", "-n", "2", "--dist", "loadfile", *argv[1:]]
    else:
        out = ROOT / "out" / "demo"
        ckpt = out / "eg3d_tiny"
        fixtures = ROOT / "tests" / "fixtures"
        cli = [str(python()), "-m", "styleavatar_jax.cli"]
        step1 = [
            *cli,
            "convert-eg3d",
            str(fixtures / "eg3d_tiny.pkl"),
            str(ckpt),
            "--overwrite",
            "--check",
            str(fixtures / "eg3d_tiny_io.npz"),
        ]
        print("$", " ".join(step1), flush=True)
        if rc := subprocess.call(step1, cwd=ROOT, env=env):
            return rc
        cmd = [
            *cli,
            "sample",
            "--ckpt",
            str(ckpt),
            "--seeds",
            "0-3",
            "--batch",
            "4",
            "--views",
            "yaw=-180:180:8",
            "--out",
            str(out / "samples"),
        ]
        print("$", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
