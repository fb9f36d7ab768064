"""systemd integration without libsystemd: readiness/status notification, socket activation, watchdog.

All three follow the documented protocols (sd_notify(3), sd_listen_fds(3), sd_watchdog_enabled(3)) and
are no-ops when the process was not started by systemd, so ``serve`` calls them unconditionally:

    sockets = systemd.listen_sockets()          # [] unless socket-activated
    ... start listening (on ``sockets`` when given) ...
    systemd.notify("READY=1\\nSTATUS=listening on 127.0.0.1:2700")
    watchdog = systemd.Watchdog(is_healthy=engine_is_alive).start()   # no-op without WatchdogSec=
    ... on SIGTERM:
    systemd.notify("STOPPING=1")
    watchdog.stop()

``Watchdog`` pings ``WATCHDOG=1`` only while ``is_healthy()`` returns true: if the inference worker hangs,
the pings stop, systemd kills the service after ``WatchdogSec=`` and ``Restart=on-failure`` brings it back.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3

__all__ = [
    "SD_LISTEN_FDS_START",
    "Watchdog",
    "listen_fds",
    "listen_sockets",
    "notify",
    "notify_socket_address",
    "watchdog_interval",
]


def notify_socket_address(value: str | None = None) -> str | bytes | None:
    """The address ``$NOTIFY_SOCKET`` names, in the form ``socket.sendto`` takes; None if unusable.

    A leading ``@`` means the Linux abstract namespace (the ``@`` becomes a NUL byte).
    """
    if value is None:
        value = os.environ.get("NOTIFY_SOCKET")
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    # vsock:CID:PORT and other transports are not used by the units we ship.
    log.debug("unsupported NOTIFY_SOCKET %r", value)
    return None


def notify(state: str, unset_environment: bool = False) -> bool:
    """Send ``state`` (newline-separated ``KEY=VALUE`` lines, e.g. ``"READY=1"``) to the service manager.

    Returns True if a message was sent, False when not running under systemd (no ``$NOTIFY_SOCKET``) or
    the send failed. Never raises: notification must not take the daemon down.
    """
    address = notify_socket_address()
    if unset_environment:
        os.environ.pop("NOTIFY_SOCKET", None)
    if address is None or not state:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            data = state.encode()
            sent = sock.send(data)
            return sent == len(data)
    except OSError as error:
        log.warning("sd_notify(%r) failed: %s", state.split("\n", 1)[0], error)
        return False


def _env_pid_matches(name: str) -> bool:
    """True if ``$name`` is unset or equals our pid (systemd sets these for the main process only)."""
    value = os.environ.get(name)
    if value is None or value == "":
        return True
    try:
        return int(value) == os.getpid()
    except ValueError:
        return False


def listen_fds(unset_environment: bool = True) -> list[tuple[int, str]]:
    """File descriptors passed by socket activation, as ``(fd, name)`` pairs starting at fd 3.

    Empty unless ``$LISTEN_PID`` is our pid and ``$LISTEN_FDS`` is set. Names come from
    ``$LISTEN_FDNAMES`` (``FileDescriptorName=`` in the .socket unit; "unknown" when absent). The fds are
    marked close-on-exec. With ``unset_environment`` the variables are removed so that child processes do
    not take the fds for theirs.
    """
    try:
        pid = os.environ.get("LISTEN_PID")
        count = os.environ.get("LISTEN_FDS")
        if not pid or not count:
            return []
        try:
            if int(pid) != os.getpid():
                return []
            n = int(count)
        except ValueError:
            return []
        if n <= 0:
            return []
        raw_names = os.environ.get("LISTEN_FDNAMES")
        names = raw_names.split(":") if raw_names else []
        if len(names) != n:
            names = ["unknown"] * n
        result = []
        for i in range(n):
            fd = SD_LISTEN_FDS_START + i
            try:
                os.set_inheritable(fd, False)
            except OSError as error:
                log.warning("LISTEN_FDS names fd %d but it is not open: %s", fd, error)
                continue
            result.append((fd, names[i]))
        return result
    finally:
        if unset_environment:
            for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
                os.environ.pop(name, None)


def listen_sockets(unset_environment: bool = True) -> list[socket.socket]:
    """The socket-activated listening sockets as ``socket.socket`` objects (family/type detected).

    Pass them to the server instead of binding, e.g. ``websockets.asyncio.server.serve(handler,
    sock=sockets[0])``. Returns ``[]`` when not socket-activated. ``sock.fd_name`` is not available on
    ``socket.socket``; use ``listen_fds()`` if the names matter.
    """
    sockets = []
    for fd, name in listen_fds(unset_environment=unset_environment):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as error:
            log.warning("passed fd %d (%s) is not a socket: %s", fd, name, error)
            continue
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds (``WatchdogSec=``), or None when the watchdog is not enabled
    for this process (no ``$WATCHDOG_USEC``, or ``$WATCHDOG_PID`` names another process)."""
    value = os.environ.get("WATCHDOG_USEC")
    if not value or not _env_pid_matches("WATCHDOG_PID"):
        return None
    try:
        usec = int(value)
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


class Watchdog:
    """Pings ``WATCHDOG=1`` every half interval from a daemon thread while ``is_healthy()`` is true.

    ``interval`` defaults to ``watchdog_interval()``; when that is None the watchdog is disabled and
    ``start()`` does nothing (``enabled`` is False). A false or raising ``is_healthy()`` skips the ping
    (logged once per unhealthy spell), so a hung inference worker leads systemd to restart the service.
    """

    def __init__(
        self,
        is_healthy: Callable[[], bool] | None = None,
        interval: float | None = None,
        send: Callable[[str], bool] = notify,
    ) -> None:
        self.interval = interval if interval is not None else watchdog_interval()
        self.is_healthy = is_healthy or (lambda: True)
        self._send = send
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pings = 0
        self.skipped = 0
        self._was_healthy = True

    @property
    def enabled(self) -> bool:
        return self.interval is not None and self.interval > 0

    @property
    def period(self) -> float | None:
        return self.interval / 2 if self.enabled else None  # type: ignore[operator]

    def check_and_ping(self) -> bool:
        """One round: ping if healthy. Returns whether a ping was sent."""
        try:
            healthy = bool(self.is_healthy())
        except Exception:
            log.exception("watchdog health check raised; treating the service as unhealthy")
            healthy = False
        if not healthy:
            self.skipped += 1
            if self._was_healthy:
                log.error("inference worker unhealthy: withholding watchdog pings (systemd will restart us)")
            self._was_healthy = False
            return False
        if not self._was_healthy:
            log.warning("inference worker healthy again: resuming watchdog pings")
        self._was_healthy = True
        if self._send("WATCHDOG=1"):
            self.pings += 1
            return True
        return False

    def _run(self) -> None:
        assert self.period is not None
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.check_and_ping()
            next_at += self.period
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (suspended, overloaded): restart the schedule
                next_at = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def start(self) -> Watchdog:
        if self.enabled and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
