#!/usr/bin/env python3
"""Bootstrap and run, with nothing but python3 on the machine.

    python3 scripts/dev.py demo    train a small 3D avatar GAN on CPUs; metric, grid, turntable
    python3 scripts/dev.py test    run the test suite (what CI runs)

Creates .venv (if missing or stale) with the exact tested set in requirements/ci.txt plus
this package (editable), then runs the command inside it. Extra arguments go to pytest
(test) or to `styleavatar-jax demo` (demo).
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
        cmd = [str(python()), "-m", "styleavatar_jax.cli", "demo", *argv[1:]]
        print("$", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
