"""Scale-out: two real daemons behind a real nginx running ``deploy/nginx/conformer-streamer.conf``.

The shipped config is used as is, except for loopback ports, a throw-away self-signed certificate and
the debugging header ``X-Upstream-Addr`` (uncommented) that tells each client which daemon serves it.
nginx runs unprivileged from a temp prefix (``-p``, ``daemon off``, pid/logs/temp dirs in tmp).

Checked: websocket streams spread over both daemons (per-daemon /metrics); TLS termination at the proxy;
SIGKILL of one daemon mid-run loses only its own streams (the other daemon's clients keep getting events
and all their finals); clients that reconnect land on the survivor; SIGTERM of a daemon behind the proxy
drains: its clients get their finals and ``end`` (close 1001), and new connections go to the other one.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from bench import loadgen
from bench.loadgen import AudioPlan, ServerProcess, StreamClient

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "deploy" / "nginx" / "conformer-streamer.conf"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),  # generous: CI machines may be shared and slow
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)"),
]

# speech-like clips with silent gaps: every utterance ends in an endpoint (the energy gate sees silence)
CLIPS = [loadgen.babble(1.2 + 0.2 * i, seed=i) for i in range(3)]
GAP_S = 1.0


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def make_cert(tmp: Path) -> tuple[Path, Path] | None:
    if not shutil.which("openssl"):
        return None
    cert, key = tmp / "proxy.crt", tmp / "proxy.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def render_conf(backends: list[int], http_port: int, tls_port: int, cert: tuple[Path, Path] | None) -> str:
    """The shipped config with loopback ports, the test certificate and the debugging header on."""
    text = CONF.read_text()
    defaults = re.findall(r"^\s*server 127\.0\.0\.1:(\d+) ", text, flags=re.M)
    assert len(defaults) == 2, defaults
    for old, new in zip(defaults, backends, strict=True):
        text = text.replace(f"server 127.0.0.1:{old} ", f"server 127.0.0.1:{new} ")
    text = text.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{http_port};")
    text = text.replace("# add_header X-Upstream-Addr", "add_header X-Upstream-Addr")
    if cert is not None:
        text = text.replace("listen 443 ssl;", f"listen 127.0.0.1:{tls_port} ssl;")
        text = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {cert[0]};", text)
        text = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {cert[1]};", text)
    else:  # no openssl: plain listener only
        text = re.sub(r"^\s*(listen 443 ssl|ssl_\w+)\b.*$", "", text, flags=re.M)
    assert "2710" not in text and "8080" not in text
    return text


class Cluster:
    def __init__(self, tmp: Path, model: Path) -> None:
        self.tmp = tmp
        self.model = model
        self.daemons: list[ServerProcess] = []
        self.nginx: subprocess.Popen | None = None
        self.http_port = loadgen.free_port()
        self.tls_port = loadgen.free_port()
        self.cert: tuple[Path, Path] | None = None

    def daemon(self, i: int, port: int = 0) -> ServerProcess:
        return ServerProcess(
            str(self.model),
            port=port,
            extra=[
                "--batching.max_wait_ms",
                "5",
                "--model.threads",
                "1",
                "--limits.max_queued_s",
                "60",
                "--streaming.buffer_s",
                "90",
            ],
            log_path=self.tmp / f"daemon{i}.log",
        )

    def start(self) -> None:
        self.daemons = [self.daemon(i).launch() for i in range(2)]
        for d in self.daemons:
            d.wait_listening(180)
        self.cert = make_cert(self.tmp)
        prefix = self.tmp / "nginx"
        for sub in ("logs", "body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        (prefix / "conformer-streamer.conf").write_text(
            render_conf([d.port for d in self.daemons], self.http_port, self.tls_port, self.cert)
        )
        (prefix / "nginx.conf").write_text(
            f"""daemon off;
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/conformer-streamer.conf;
}}
"""
        )
        args = [
            NGINX,
            "-p",
            str(prefix),
            "-c",
            str(prefix / "nginx.conf"),
            "-e",
            str(prefix / "logs/error.log"),
        ]
        check = subprocess.run([*args, "-t"], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        self.nginx = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(self.http_port)

    def upstream(self, i: int) -> str:
        return f"127.0.0.1:{self.daemons[i].port}"

    def metrics(self, i: int) -> dict[str, float]:
        status, body = loadgen.http_get(f"http://{self.upstream(i)}/metrics")
        assert status == 200
        return loadgen.parse_metrics(body)

    def restart(self, i: int) -> None:
        old = self.daemons[i]
        old.kill()
        self.daemons[i] = self.daemon(i, port=old.port).start()

    def stop(self) -> None:
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGQUIT)  # graceful shutdown
            try:
                self.nginx.wait(15)
            except subprocess.TimeoutExpired:
                self.nginx.kill()
                self.nginx.wait(5)
        for d in self.daemons:
            d.kill()

    def logs(self) -> str:
        out = []
        for path in [*(d.log_path for d in self.daemons), self.tmp / "nginx/logs/error.log"]:
            if path.exists():
                out.append(
                    f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:])
                )
        return "\n".join(out)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pytest.importorskip("transformers")
    from streamer.server.testing import make_tiny_model

    tmp = tmp_path_factory.mktemp("scaleout")
    c = Cluster(tmp, make_tiny_model(tmp / "tiny-model"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


def client(url: str, i: int, **kw) -> StreamClient:
    return StreamClient(url, AudioPlan(CLIPS, gap_s=GAP_S, offset=i), i, frame_ms=100, end_timeout_s=30, **kw)


def served_by(result) -> str:
    """The daemon that took the stream: the last address of $upstream_addr ("tried, ..., served")."""
    return result.upstream.split(",")[-1].strip()


async def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


def test_http_routes_and_tls_termination(cluster):
    status, body = loadgen.http_get(f"http://127.0.0.1:{cluster.http_port}/healthz")
    assert status == 200 and '"status": "ok"' in body
    status, _ = loadgen.http_get(f"http://127.0.0.1:{cluster.http_port}/metrics")
    assert status == 404  # per daemon only, never through the balancer
    if cluster.cert is None:
        pytest.skip("openssl not installed: TLS listener not tested")
    context = ssl.create_default_context(cafile=str(cluster.cert[0]))

    async def main():
        from websockets.asyncio.client import connect

        async with connect(f"wss://127.0.0.1:{cluster.tls_port}/v1/stream", ssl=context) as ws:
            await ws.send('{"type": "start"}')
            ready = await ws.recv()
            assert '"ready"' in ready
            assert ws.response.headers.get("X-Upstream-Addr", "").split(",")[-1].strip() in (
                cluster.upstream(0),
                cluster.upstream(1),
            )
            for k in range(0, CLIPS[0].size, 1600):
                await ws.send(CLIPS[0][k : k + 1600].tobytes())
            await ws.send(bytes(2 * 16000))  # 1 s of silence: the endpoint
            await ws.send('{"type": "end"}')
            messages = [m async for m in ws]
        assert '"end"' in messages[-1] and any('"final"' in m for m in messages), messages
        assert ws.close_code == 1000

    asyncio.run(main())


def test_spread_sigkill_one_daemon_and_reconnect(cluster):
    url = f"ws://127.0.0.1:{cluster.http_port}/v1/stream"
    n = 6

    async def main():
        total_b = loadgen.metric(cluster.metrics(1), "conformer_connections_total", endpoint="stream")
        stop = asyncio.Event()
        clients = [client(url, i) for i in range(n)]
        tasks = []
        for c in clients:
            tasks.append(asyncio.create_task(c.run(time.monotonic() + 120, stop)))
            await wait_until(lambda c=c: c.result.ready or c.result.failure, 20)
        assert all(c.result.ready for c in clients), [c.result.failure for c in clients]
        ups = [c.result.upstream for c in clients]
        on_a = [c for c in clients if served_by(c.result) == cluster.upstream(0)]
        on_b = [c for c in clients if served_by(c.result) == cluster.upstream(1)]
        assert len(on_a) + len(on_b) == n, ups
        # least_conn: sequential connects alternate, so both daemons serve half
        assert len(on_a) == len(on_b) == n // 2, ups
        for i, group in ((0, on_a), (1, on_b)):
            m = cluster.metrics(i)
            assert loadgen.metric(m, "conformer_streams_active") == len(group)
            assert loadgen.metric(m, "conformer_connections_active", endpoint="stream") == len(group)

        # everyone is getting events
        assert await wait_until(lambda: all(c.result.partials + c.result.finals > 0 for c in clients), 30)

        # SIGKILL daemon A mid-stream
        cluster.daemons[0].signal(signal.SIGKILL)
        killed_at = time.monotonic()
        # its clients lose their connection (nginx closes them) ...
        assert await wait_until(lambda: all(tasks[clients.index(c)].done() for c in on_a), 15)
        for c in on_a:
            assert not c.result.held and c.result.failure, c.result
        # ... while B's clients keep streaming and keep getting events
        await asyncio.sleep(3.0)
        assert not any(tasks[clients.index(c)].done() for c in on_b)
        assert await wait_until(lambda: all(c.result.last_event_t > killed_at for c in on_b), 15)
        assert loadgen.metric(cluster.metrics(1), "conformer_streams_active") == len(on_b)

        # A's clients reconnect through the proxy and are served by B
        reconnects = [client(url, 10 + i) for i in range(len(on_a))]
        re_tasks = [asyncio.create_task(r.run(time.monotonic() + 3.0)) for r in reconnects]
        stop.set()  # B's original clients finish their utterance, send end, get the rest
        results = await asyncio.wait_for(asyncio.gather(*tasks, *re_tasks), 90)
        for r in results[n:]:
            assert r.ready and served_by(r) == cluster.upstream(1), r
            assert r.held and r.lost_finals == 0 and r.utterances_sent >= 1, r
        for c in on_b:
            r = c.result
            assert r.held and not r.errors, r
            assert r.utterances_sent >= 2 and r.lost_finals == 0, r
        m = cluster.metrics(1)
        total = loadgen.metric(m, "conformer_connections_total", endpoint="stream")
        assert total - total_b == len(on_b) + len(reconnects)
        assert loadgen.metric(m, "conformer_errors_total") == 0, m
        status, _ = loadgen.http_get(f"http://127.0.0.1:{cluster.http_port}/healthz")
        assert status == 200  # the service is still up

    try:
        asyncio.run(main())
    except AssertionError:
        print(cluster.logs())
        raise


def test_sigterm_drains_behind_the_proxy(cluster):
    """Restart A; SIGTERM B mid-stream: B's clients get finals + end (1001); new streams go to A."""
    cluster.restart(0)
    url = f"ws://127.0.0.1:{cluster.http_port}/v1/stream"

    async def main():
        # The proxy marked A failed (fail_timeout=10s) when it died; wait until it sends streams there again.
        async def lands_on_a() -> bool:
            probe = client(url, 30)
            result = await probe.run(time.monotonic())  # no utterance: start, end, close
            return served_by(result) == cluster.upstream(0)

        deadline = time.monotonic() + 30
        while not await lands_on_a():
            assert time.monotonic() < deadline, "the proxy never sent a stream to the restarted daemon"
            await asyncio.sleep(0.5)

        stop = asyncio.Event()
        clients = [client(url, i) for i in range(4)]
        tasks = []
        for c in clients:
            tasks.append(asyncio.create_task(c.run(time.monotonic() + 120, stop)))
            await wait_until(lambda c=c: c.result.ready or c.result.failure, 20)
        assert all(c.result.ready for c in clients), [c.result.failure for c in clients]
        on_a = [c for c in clients if served_by(c.result) == cluster.upstream(0)]
        on_b = [c for c in clients if served_by(c.result) == cluster.upstream(1)]
        assert on_a and on_b, [c.result.upstream for c in clients]
        assert await wait_until(lambda: all(c.result.partials + c.result.finals > 0 for c in clients), 30)
        before = {id(c): c.result.finals for c in on_b}
        cluster.daemons[1].signal(signal.SIGTERM)
        # while B drains, new streams go to A (B answers 503, the proxy tries the next daemon)
        assert await loadgen.wait_not_serving(cluster.upstream(1), 30)  # B has begun draining
        late = await asyncio.wait_for(client(url, 20).run(time.monotonic() + 2.0), 60)
        assert late.ready and served_by(late) == cluster.upstream(0), late
        assert late.held and late.lost_finals == 0, late
        await asyncio.wait_for(asyncio.gather(*(tasks[clients.index(c)] for c in on_b)), 60)
        for c in on_b:
            r = c.result
            assert r.got_end and r.close_code == 1001, r  # drained: end, then "going away"
            assert r.lost_finals == 0, r
            assert r.finals > before[id(c)], r  # the open utterance was finalized on the way out
        assert cluster.daemons[1].proc.wait(60) == 0
        stop.set()  # A's clients were never disturbed: they finish normally
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        for c in on_a:
            assert c.result.held and c.result.lost_finals == 0 and not c.result.errors, c.result

    try:
        asyncio.run(main())
    except AssertionError:
        print(cluster.logs())
        raise
