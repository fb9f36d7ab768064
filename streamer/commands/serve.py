"""``conformer-streamer serve``: the streaming recognition daemon.

Configuration: ``--config FILE.toml`` plus one ``--section.field`` flag per option (see
``streamer.config``), and the aliases ``--host``, ``--port``, ``--vosk-port``, ``--mic [DEVICE]``,
``--model PATH``. SIGTERM/SIGINT: stop accepting, finish open utterances, close clients, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time

from streamer import config, systemd

log = logging.getLogger("streamer.serve")

LOOP_STALL_S = 10.0  # the event loop missing its heartbeat this long counts as unhealthy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    aliases = parser.add_argument_group("common options (aliases of the [server]/[model] flags)")
    aliases.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    aliases.add_argument(
        "--port", type=int, default=None, help="websocket + HTTP port (default 2700; 0 = any free)"
    )
    aliases.add_argument(
        "--vosk-port", type=int, default=None, help="also serve the vosk-server protocol on PORT"
    )
    aliases.add_argument(
        "--mic",
        nargs="?",
        const="",
        default=None,
        metavar="DEVICE",
        help="caption a local microphone (sounddevice name or index; default device if omitted) to /v1/listen",
    )
    aliases.add_argument("--model", default=None, help="model directory (default: the embedded model)")
    config.add_arguments(parser)


def settings_from_args(args: argparse.Namespace) -> config.Settings:
    """The validated settings: defaults < ``--config`` TOML < ``--section.field`` flags < the aliases."""
    return config.from_args(
        args,
        aliases={
            "server": {"host": args.host, "port": args.port, "vosk_port": args.vosk_port, "mic": args.mic},
            "model": {"path": args.model},
        },
    )


async def serve_forever(settings: config.Settings, engine, *, ready=None) -> int:
    """Run the daemon on this loop until SIGTERM/SIGINT; ``ready(app)`` is called once listening."""
    from streamer.server.app import App

    app = App(settings, engine)
    await app.start(sockets=activated_sockets())
    addresses = ", ".join(app.addresses())
    print(f"conformer-streamer: listening on {addresses}", flush=True)
    # The watchdog pings only while the engine worker is alive AND this event loop is responsive.
    beat = [time.monotonic()]

    async def heartbeat() -> None:
        while True:
            beat[0] = time.monotonic()
            await asyncio.sleep(1.0)

    heartbeat_task = asyncio.create_task(heartbeat())
    systemd.notify(f"READY=1\nSTATUS=listening on {addresses}")
    watchdog = systemd.Watchdog(
        is_healthy=lambda: app.engine_is_alive() and time.monotonic() - beat[0] < LOOP_STALL_S
    )
    watchdog.start()
    if ready is not None:
        ready(app)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(name: str) -> None:
        if received:  # second signal: stop waiting for graceful shutdown
            log.warning("%s again: exiting now", name)
            for task in asyncio.all_tasks(loop):
                if task is not asyncio.current_task():
                    task.cancel()
        received.append(name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        await stop.wait()
        log.info("%s: stopping", received[0] if received else "stop")
        systemd.notify("STOPPING=1\nSTATUS=finishing open streams")
        await app.stop()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        heartbeat_task.cancel()
        watchdog.stop()
    return 0


def activated_sockets() -> list:
    """Socket-activated listeners, main port first; one named ``vosk`` (``FileDescriptorName=vosk``) or,
    without names, a second one serves the vosk protocol."""
    names = [name for _, name in systemd.listen_fds(unset_environment=False)]
    sockets = systemd.listen_sockets()
    if len(names) != len(sockets) or "vosk" not in names:
        return sockets
    main = [s for s, n in zip(sockets, names, strict=True) if n != "vosk"]
    vosk = [s for s, n in zip(sockets, names, strict=True) if n == "vosk"]
    return [*main[:1], *vosk[:1]]


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except (ValueError, OSError) as exc:
        print(f"conformer-streamer serve: {exc}", file=sys.stderr)
        return 2
    from streamer.engine import RecognitionEngine

    try:
        engine = RecognitionEngine(settings)
    except (OSError, RuntimeError, ValueError) as exc:  # RuntimeError: beam asked for without the lm extra
        print(f"conformer-streamer serve: cannot start the engine (model, decoder): {exc}", file=sys.stderr)
        return 1
    engine.start()
    try:
        return asyncio.run(serve_forever(settings, engine))
    except OSError as exc:  # e.g. the port is taken
        print(f"conformer-streamer serve: {exc}", file=sys.stderr)
        return 1
    except (asyncio.CancelledError, KeyboardInterrupt):  # a second signal: stopped without draining
        return 1
    finally:
        engine.stop(drain=True)
