"""streamer.systemd against a local NOTIFY_SOCKET and hand-made socket activation."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

from streamer import systemd


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def test_notify_without_socket_is_noop(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False


def test_notify_sends_ready_and_status(notify_socket):
    assert systemd.notify("READY=1\nSTATUS=listening")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=listening"


def test_notify_abstract_namespace(monkeypatch):
    name = f"conformer-streamer-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify("STOPPING=1")
        assert sock.recv(4096) == b"STOPPING=1"
    finally:
        sock.close()


def test_notify_dead_socket_returns_false(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert systemd.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    assert systemd.notify("READY=1") is False


def test_notify_unset_environment(notify_socket):
    assert systemd.notify("READY=1", unset_environment=True)
    assert "NOTIFY_SOCKET" not in os.environ
    assert systemd.notify("READY=1") is False


def test_watchdog_interval(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert systemd.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", "")
    monkeypatch.setenv("WATCHDOG_USEC", "junk")
    assert systemd.watchdog_interval() is None


def test_watchdog_disabled_without_env(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    dog = systemd.Watchdog(lambda: True)
    assert not dog.enabled
    dog.start()
    assert dog._thread is None
    dog.stop()


def _collect(sock, seconds):
    messages = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            messages.append(sock.recv(4096))
        except TimeoutError:
            break
    return messages


def test_watchdog_pings_at_half_interval_only_while_healthy(notify_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # 0.4 s -> ping every 0.2 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    healthy = threading.Event()
    healthy.set()
    dog = systemd.Watchdog(healthy.is_set)
    assert dog.enabled and dog.period == pytest.approx(0.2)
    with dog:
        pings = _collect(notify_socket, 1.05)
        assert set(pings) == {b"WATCHDOG=1"}
        assert 4 <= len(pings) <= 7, len(pings)
        healthy.clear()  # the inference worker hangs: pings must stop
        time.sleep(0.25)
        _collect(notify_socket, 0.05)  # drain a ping that raced the flag
        assert _collect(notify_socket, 0.8) == []
        assert dog.skipped >= 3
        healthy.set()  # it recovers
        assert _collect(notify_socket, 0.5)
    time.sleep(0.3)
    _collect(notify_socket, 0.05)
    assert _collect(notify_socket, 0.5) == []  # stopped


def test_watchdog_health_check_raising_counts_as_unhealthy(notify_socket):
    def broken():
        raise RuntimeError("worker gone")

    dog = systemd.Watchdog(broken, interval=1.0)
    assert dog.check_and_ping() is False
    notify_socket.settimeout(0.2)
    with pytest.raises(TimeoutError):
        notify_socket.recv(4096)


def test_listen_fds_ignored_for_other_pid(monkeypatch):
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert systemd.listen_sockets() == []
    assert "LISTEN_FDS" not in os.environ  # unset even when not ours
    monkeypatch.delenv("LISTEN_PID", raising=False)
    assert systemd.listen_sockets() == []


SOCKET_ACTIVATED_CHILD = textwrap.dedent(
    """
    import os, socket, sys
    os.environ["LISTEN_PID"] = str(os.getpid())   # systemd sets it between fork and exec
    from streamer import systemd
    print(systemd.listen_fds(unset_environment=False), flush=True)
    socks = systemd.listen_sockets()
    assert "LISTEN_FDS" not in os.environ
    assert [s.fileno() for s in socks] == [3, 4], socks
    assert socks[0].family == socket.AF_INET and socks[0].type == socket.SOCK_STREAM
    assert socks[1].family == socket.AF_UNIX and socks[1].type == socket.SOCK_DGRAM
    assert not os.get_inheritable(3)
    socks[0].setblocking(True)
    conn, _ = socks[0].accept()
    conn.sendall(b"hello from activated child")
    conn.close()
    """
)


def test_listen_sockets_from_socket_activation(tmp_path):
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    port = tcp.getsockname()[1]
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dgram.bind(str(tmp_path / "d.sock"))

    def preexec():  # place the sockets at fd 3 and 4 like systemd does
        os.dup2(tcp_fd, 3)
        os.dup2(dgram_fd, 4)
        os.set_inheritable(3, True)
        os.set_inheritable(4, True)

    # duplicates well away from 3/4, so dup2 in the child does not clobber one with the other
    tcp_fd, dgram_fd = (
        os.dup2(tcp.fileno(), 40, inheritable=False),
        os.dup2(dgram.fileno(), 41, inheritable=False),
    )
    env = dict(os.environ, LISTEN_FDS="2", LISTEN_FDNAMES="web:notify")
    child = subprocess.Popen(
        [sys.executable, "-c", SOCKET_ACTIVATED_CHILD],
        env=env,
        preexec_fn=preexec,
        close_fds=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        client = socket.create_connection(("127.0.0.1", port), timeout=20)
        data = client.recv(100)
        client.close()
        out, err = child.communicate(timeout=30)
        assert child.returncode == 0, err.decode()
        assert data == b"hello from activated child"
        assert out.decode().strip() == "[(3, 'web'), (4, 'notify')]"
    finally:
        if child.poll() is None:
            child.kill()
        for fd in (tcp_fd, dgram_fd):
            os.close(fd)
        tcp.close()
        dgram.close()
