"""scripts/setup.sh's Debian step while another apt/dpkg holds the package locks (unattended upgrades):
it waits for them, then fails with a message that says why. The locks are really taken (fcntl, as apt and
dpkg take them) for a few seconds only, so other users of apt on the machine at most wait that long."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ("/var/lib/apt/lists/lock", "/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("apt-get") is None or not all(Path(p).exists() for p in LOCKS),
    reason="needs root on a Debian system (setup.sh installs Debian packages only as root)",
)


def test_apt_step_waits_for_the_package_lock_then_fails_clearly():
    held = []
    try:
        for path in LOCKS:
            f = open(path, "a")  # noqa: SIM115  (held until the finally below)
            held.append(f)
            try:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pytest.skip(f"another apt/dpkg is running now ({path} is locked)")
        started = time.monotonic()
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / "apt-install.sh"), "flite"],
            env={**os.environ, "SETUP_APT_LOCK_TIMEOUT": "3"},
            capture_output=True,
            text=True,
            timeout=30,
        )
        took = time.monotonic() - started
    finally:
        for f in held:
            f.close()  # closing the file releases its fcntl lock
    assert result.returncode != 0, result.stderr
    assert took >= 2.5, f"gave up after {took:.1f} s without waiting: {result.stderr}"
    assert "held the package lock for 3 s" in result.stderr and "run this again" in result.stderr, (
        result.stderr
    )
    assert "waiting for another apt/dpkg" in result.stderr


def test_setup_installs_debian_packages_through_the_waiting_step():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "scripts/apt-install.sh" in setup and "apt-get install" not in setup
