"""The unit files in systemd/: `systemd-analyze verify` is clean and the service's exposure is <= 2.0.

ExecStart= points at /opt/conformer-streamer/venv (the documented install), which does not exist on a
development machine, so the units are verified as copies whose ExecStart= points at a stub executable.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "systemd"
INSTALLED_BIN = "/opt/conformer-streamer/venv/bin/conformer-streamer"
ANALYZE = shutil.which("systemd-analyze")
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _stage(tmp_path: Path, with_mic: bool = False) -> Path:
    stub = tmp_path / "bin" / "conformer-streamer"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for name in ("conformer-streamer.service", "conformer-streamer.socket"):
        (units / name).write_text((UNITS / name).read_text().replace(INSTALLED_BIN, str(stub)))
    if with_mic:
        dropins = units / "conformer-streamer.service.d"
        dropins.mkdir()
        (dropins / "mic.conf").write_text(
            (UNITS / "mic" / "mic.conf").read_text().replace(INSTALLED_BIN, str(stub))
        )
    return units


def _verify(units: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            ANALYZE,
            "verify",
            str(units / "conformer-streamer.service"),
            str(units / "conformer-streamer.socket"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _exposure(units: Path) -> tuple[float, str]:
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(units / "conformer-streamer.service")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r"Overall exposure level for conformer-streamer\.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1)), result.stdout


@needs_analyze
def test_units_verify_clean(tmp_path):
    result = _verify(_stage(tmp_path))
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


@needs_analyze
def test_service_exposure_at_most_2(tmp_path):
    exposure, report = _exposure(_stage(tmp_path))
    print(f"exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, report


@needs_analyze
def test_mic_dropin_verifies_and_stays_hardened(tmp_path):
    units = _stage(tmp_path, with_mic=True)
    result = _verify(units)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    exposure, report = _exposure(units)
    assert exposure <= MAX_EXPOSURE, report
    assert "char-alsa:rw" in report  # the drop-in really applied


def _settings(path: Path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_service_settings_the_daemon_relies_on():
    s = _settings(UNITS / "conformer-streamer.service")
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] == ["30"] and s["Restart"] == ["on-failure"]
    assert s["DynamicUser"] == ["yes"] and s["PrivateDevices"] == ["yes"]
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert s["CapabilityBoundingSet"] == [""] and s["UMask"] == ["0077"]
    sock = _settings(UNITS / "conformer-streamer.socket")
    assert sock["ListenStream"] == ["127.0.0.1:2700"]
    config = (UNITS / "conformer-streamer.toml").read_text()
    import tomllib

    from streamer import config as streamer_config

    settings = streamer_config.apply(streamer_config.Settings(), tomllib.loads(config), "example config")
    assert settings.server.host == "127.0.0.1" and settings.server.port == 2700


# --------------------------------------------------------------------- MemoryDenyWriteExecute and torch

# systemd's MemoryDenyWriteExecute= is this seccomp filter (src/shared/seccomp-util.c): no mmap() that is
# both writable and executable, no mprotect()/pkey_mprotect() adding PROT_EXEC, no shmat(SHM_EXEC).
MDWE_CHILD = textwrap.dedent(
    """
    import ctypes, errno, mmap
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    class Arg(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(Arg)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    ctx = lib.seccomp_init(0x7FFF0000)  # SCMP_ACT_ALLOW
    W, X, SHM_EXEC, MASKED_EQ = mmap.PROT_WRITE, mmap.PROT_EXEC, 0o100000, 7
    for name, mask in (("mmap", W | X), ("mprotect", X), ("pkey_mprotect", X), ("shmat", SHM_EXEC)):
        rule = Arg(2, MASKED_EQ, mask, mask)
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        assert lib.seccomp_rule_add_array(ctx, 0x00050000 | errno.EPERM, nr, 1, ctypes.byref(rule)) == 0
    assert lib.seccomp_load(ctx) == 0
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | W | X)
        raise SystemExit("filter not effective")
    except OSError:
        pass
    import torch
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16000)
    y = torch.nn.Conv1d(1, 64, 10, stride=5)(x)             # the feature encoder's first layer
    y = torch.nn.Conv1d(64, 64, 31, groups=64, padding=15)(y)  # the conformer's depthwise conv
    z = torch.nn.Linear(64, 64)(y.transpose(1, 2))
    print("torch ok under MemoryDenyWriteExecute")
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="seccomp is Linux-only")
def test_memory_deny_write_execute_only_if_torch_survives_it():
    """The unit may enable MemoryDenyWriteExecute= only if torch's CPU kernels work under it.

    They don't today: oneDNN JIT-compiles convolution kernels, and under the filter torch fails with
    "could not create a primitive". If a future torch works, this test allows turning it on.
    """
    try:
        import ctypes

        ctypes.CDLL("libseccomp.so.2")
    except OSError:
        pytest.skip("libseccomp is not installed")
    child = subprocess.run(
        [sys.executable, "-c", MDWE_CHILD], capture_output=True, text=True, timeout=300, env=dict(os.environ)
    )
    torch_survives = child.returncode == 0
    enabled = _settings(UNITS / "conformer-streamer.service").get("MemoryDenyWriteExecute") == ["yes"]
    if enabled:
        assert torch_survives, f"MemoryDenyWriteExecute=yes breaks torch:\n{child.stderr[-2000:]}"
    elif torch_survives:
        print("note: torch now works under MemoryDenyWriteExecute=; the unit could enable it")
    else:
        print("torch fails under MemoryDenyWriteExecute= (as documented):", child.stderr.strip()[-200:])
