"""The finals' beam search in a child process: its own interpreter, so it never holds the daemon's GIL.

Why: pyctcdecode's search is Python. Run in the inference thread, it competes for the GIL with the event
loop's thread (websockets, Silero VAD, readable formatting): every GIL hand-over the loop asks for can
wait a whole switch interval (5 ms). On 32 streams, formatting one final on the loop took 8.8 ms mean
with the search in the inference thread and 0.8 ms with greedy finals (``docs/RESULTS.md``, "The finals'
beam search in its own process"). Here the inference thread sends the utterance's log-probs down a pipe
and blocks reading the answer, which releases the GIL; the search runs on another core meanwhile.

:class:`BeamSearchProcess` has the same ``decode_utterance`` as ``beam.UtteranceBeamSearch`` and gives
the same results (tested). The child imports no torch (``model`` loads its exports lazily), so it costs
the LM and the search: ~70 MB of RSS with the embedded model. A child that dies or hangs is replaced and
the request retried once; if that fails too, the search moves into the calling thread for good (logged):
a final is never lost to it.
Requests are serialized (one engine has one inference worker).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from streamer.beam import (
    SearchResult,
    UtteranceBeamSearch,
    UtteranceSearch,
    beam_search_installed,
    make_beam_decoder,
)
from streamer.ctc_merge import Vocabulary

log = logging.getLogger(__name__)
PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])  # where the child imports ``streamer`` from

START_TIMEOUT_S = 300.0  # building the search loads the LM: a large ARPA file takes minutes
SEARCH_TIMEOUT_S = 60.0  # one utterance (at most endpoint.max_utterance_s of audio) searches in < 1 s


def _portable(exc: Exception) -> Exception:
    """``exc`` itself when it survives pickling (the parent raises the same type), else a RuntimeError."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _serve(conn: Connection) -> None:
    """The child: receive what to build, build the search, say ``ready`` (or why not), then answer
    requests until told to stop or the parent goes away."""
    try:
        vocab, settings, lm_path = conn.recv()
        search = UtteranceBeamSearch(vocab, settings, lm_path)
    except Exception as exc:  # reported to the parent, which raises it where the engine is built
        conn.send(("error", _portable(exc)))
        return
    conn.send(("ready",))
    while True:
        try:
            request = conn.recv()
        except EOFError:  # the parent is gone
            return
        if request is None:
            return
        try:
            conn.send(("ok", search.decode_frames(*request)))
        except Exception as exc:  # a bad request fails that request, not the child
            conn.send(("error", _portable(exc)))


class SearchProcessError(RuntimeError):
    """The child did not answer: it died, hung, or never started."""


class BeamSearchProcess(UtteranceSearch):
    """The beam search answered by a child process."""

    def __init__(self, vocab: Vocabulary, settings: Any, lm_path: str | None) -> None:
        self._args = (vocab, settings, lm_path)
        self._lock = threading.Lock()
        self._in_thread: UtteranceBeamSearch | None = None  # the fallback, once the child has failed twice
        self._process: Any = None
        self._conn: Connection | None = None
        self._start()

    def _start(self) -> None:
        parent, child = socket.socketpair()
        # A fresh interpreter running this module, not multiprocessing's spawn: that re-imports the
        # caller's __main__, which breaks scripts that build an engine without a __main__ guard.
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
        )
        with child:
            process = subprocess.Popen(
                [sys.executable, "-m", "streamer.search_process", str(child.fileno())],
                pass_fds=[child.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
            )
        self._process, self._conn = process, Connection(parent.detach())
        self._conn.send(self._args)
        reply = self._receive(START_TIMEOUT_S)
        if reply[0] == "error":
            self._stop()
            raise reply[1]
        log.info("beam search: in child process %d", process.pid)

    def _receive(self, timeout_s: float) -> tuple:
        conn = self._conn
        assert conn is not None
        try:
            if conn.poll(timeout_s):
                return conn.recv()
        except (EOFError, OSError):
            raise SearchProcessError(f"the search process exited (code {self._process.poll()})") from None
        raise SearchProcessError(f"the search process did not answer within {timeout_s:g} s")

    def _ask(self, request: tuple) -> SearchResult:
        assert self._conn is not None
        try:
            self._conn.send(request)
        except (OSError, ValueError):
            raise SearchProcessError("the search process is gone") from None
        reply = self._receive(SEARCH_TIMEOUT_S)
        if reply[0] == "error":
            raise reply[1]
        return reply[1]

    def _search(self, lp: np.ndarray, start_s: float, frame_seconds: float, hotwords: list) -> SearchResult:
        request = (lp, start_s, frame_seconds, hotwords)
        with self._lock:
            if self._in_thread is not None:
                return self._in_thread._search(*request)
            try:
                if self._process is None:  # closed by the engine's stop: a later search restarts it
                    self._start()
                return self._ask(request)
            except SearchProcessError as first:
                log.error("beam search: %s; starting a new search process", first)
            try:
                self._restart()
                return self._ask(request)
            except (SearchProcessError, OSError) as second:
                log.error("beam search: %s; searching in the inference thread from now on", second)
                self._stop()
                self._in_thread = UtteranceBeamSearch(*self._args)
                return self._in_thread._search(*request)

    @property
    def pid(self) -> int | None:
        """The child's process id (None once the search runs in the calling thread)."""
        return None if self._process is None else self._process.pid

    def _restart(self) -> None:
        self._stop()
        self._start()

    def _stop(self) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
            conn.close()
        if process is not None:
            try:
                process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=2.0)

    def close(self) -> None:
        """Stop the child (idempotent; the next search starts a new one); the engine calls this when it
        stops."""
        with self._lock:
            self._stop()

    def __del__(self) -> None:  # a forgotten close must not leave the child running
        with contextlib.suppress(Exception):
            self._stop()


def make_finals_search(settings: Any, vocab: Vocabulary, lm_path: str | None) -> Any:
    """The finals' beam search with the LM at ``lm_path``: in a child process when
    ``decoder.search_process`` is on (the default), else in the calling thread."""
    if settings.search_process and beam_search_installed():
        return BeamSearchProcess(vocab, settings, lm_path)
    # in this thread; without the lm extra this raises its clear "needs the lm extra" error
    return make_beam_decoder(settings, vocab, lm_path)


if __name__ == "__main__":  # the child: python -m streamer.search_process FD
    _serve(Connection(int(sys.argv[1])))
