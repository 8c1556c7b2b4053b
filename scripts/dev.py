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
import shutil
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


CHROMIUM = Path("/usr/bin/chromium")  # tests/test_viewer.py opens the avatar page in it


def ensure_chromium() -> None:
    """The browser tests need Debian's chromium: install it when it is missing and we are
    root on a Debian-like system (~1 min, once); else say how (those tests fail without it)."""
    if CHROMIUM.exists() or os.name != "posix":
        return
    apt = shutil.which("apt-get")
    if apt is None or not Path("/etc/debian_version").exists():
        print(f"{CHROMIUM} is missing: the browser tests fail (install Chromium there)")
        return
    if os.geteuid() != 0:
        print(f"{CHROMIUM} is missing: the browser tests fail (sudo apt-get install chromium)")
        return
    print("installing chromium for the browser tests: apt-get update, apt-get install -y "
          "chromium (~1 min, once)", flush=True)  # fmt: skip
    quiet = dict(env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), stdout=subprocess.DEVNULL)
    ok = all(subprocess.call([apt, *args], **quiet) == 0
             for args in (["update", "-qq"], ["install", "-y", "-qq", "chromium"]))  # fmt: skip
    if not ok or not CHROMIUM.exists():
        print("installing chromium failed: the browser tests will fail")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    ensure_venv()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if argv[0] == "test":
        ensure_chromium()
        cmd = [str(python()), "-m", "pytest", "-q", "-n", "2", "--dist", "loadfile", *argv[1:]]
    else:
        cmd = [str(python()), "-m", "styleavatar_jax.cli", "demo", *argv[1:]]
        print("$", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
