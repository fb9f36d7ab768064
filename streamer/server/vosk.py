"""vosk-server compatible endpoint (``--vosk-port``), as vosk-server's ``websocket/test.py`` drives it.

Exactly one reply per audio frame, in lockstep: ``{"partial" : ...}`` or, when an utterance ended
since the previous reply, ``{"result" : [...], "text" : ...}``. ``{"eof" : 1}`` → the final result,
then close 1000; ``{"reset" : 1}`` → the final result of the open utterance, stream continues.

The config keys of vosk-server's asr_server.py: ``sample_rate``, ``words``, ``phrase_list`` (a grammar:
every utterance is one of the phrases, or ``[unk]``) and ``max_alternatives`` (n-best replies). A config
sent after the audio started applies from the next utterance (vosk-server would ignore it); text is
lower case, as vosk's English models write it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from websockets.frames import CloseCode

from streamer.events import Final, Partial, StreamError, to_dict
from streamer.grammar import DecodingOptions, GrammarError

from .protocol import (
    ProtocolError,
    StartConfig,
    close_code_for,
    parse_vosk_text,
    vosk_dump,
    vosk_partial,
    vosk_result,
)
from .session import EngineBridge, WebSocketSession

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from .host import ServerHost

log = logging.getLogger("streamer.server")


class VoskSession(WebSocketSession):
    endpoint = "vosk"

    def __init__(self, app: ServerHost, ws: ServerConnection) -> None:
        super().__init__(app, ws)
        self.sample_rate = 16000
        self.words = True
        self.phrase_list: tuple[str, ...] = ()
        self.max_alternatives = 0
        self.decoding: DecodingOptions | None = None
        self.finals: list[dict[str, Any]] = []  # finals not yet replied
        self.partial_text = ""

    async def send_error(self, code: str, message: str) -> None:
        await self.ws.send(vosk_dump({"error": message, "code": code}))

    async def serve(self) -> None:
        while not self.closing:
            timeout = self.limits.handshake_timeout_s if self.bridge is None else self.limits.idle_timeout_s
            message = await self.recv(timeout, "start_timeout" if self.bridge is None else "idle_timeout")
            if isinstance(message, str):
                self.check_text_rate()
                command = parse_vosk_text(message, self.limits.max_text_bytes)
                if command.type == "config":
                    if command.sample_rate is not None:
                        self.sample_rate = command.sample_rate
                    if command.words is not None:
                        self.words = command.words
                    await self._configure(command.phrase_list, command.max_alternatives)
                    continue
                if command.type == "eof":
                    await self._eof()
                    return
                await self._reset()
                continue
            await self._frame(message)

    async def _configure(self, phrase_list: tuple[str, ...] | None, max_alternatives: int | None) -> None:
        """New decoding options; an open stream takes them from its next utterance."""
        if phrase_list is None and max_alternatives is None:
            return
        if phrase_list is not None:
            self.phrase_list = phrase_list
        if max_alternatives is not None:
            self.max_alternatives = max_alternatives
        try:
            self.decoding = await asyncio.to_thread(  # compiling 10 000 phrases takes ~0.4 s
                self.app.engine.decoding_options,
                grammar=list(self.phrase_list) or None,
                max_alternatives=self.max_alternatives,
            )
        except GrammarError as exc:
            raise ProtocolError("bad_message", f"config: {exc}") from None
        if self.bridge is not None:
            self.bridge.stream.configure(self.decoding)

    def _open(self) -> EngineBridge:
        if self.bridge is None:
            return self.open_bridge(
                StartConfig(sample_rate=self.sample_rate),
                decoding=self.decoding,  # words: filtered per reply
            )
        return self.bridge

    def _result(self, finals: list[dict[str, Any]]) -> str:
        return vosk_result(finals, self.words, self.max_alternatives)

    def _drain(self) -> None:
        """Take the queued events (EndOfStream, the last of them, needs nothing: the reply follows)."""
        assert self.bridge is not None
        while not self.bridge.queue.empty():
            event = self.bridge.queue.get_nowait()
            if isinstance(event, Partial):
                self.partial_text = event.text
                self.app.metrics.events.inc(type="partial")
            elif isinstance(event, Final):
                self.finals.append(to_dict(event))
                self.partial_text = ""
                self.app.metrics.events.inc(type="final")
            elif isinstance(event, StreamError):
                if event.fatal:
                    raise ProtocolError(event.code, event.message)
                self.app.metrics.errors.inc(code=event.code)

    async def _caught_up(self, timeout: float) -> bool:
        """Wait (bounded) until the engine has processed this stream's audio, then take its events;
        False on timeout (the reply goes out with what has arrived)."""
        assert self.bridge is not None
        idle = await self.bridge.wait_idle(timeout)
        self._drain()
        return idle

    def _reply(self) -> str:
        if self.finals:
            text = self._result(self.finals)
            self.finals = []
            return text
        return vosk_partial(self.partial_text)

    async def _frame(self, data: bytes) -> None:
        self.check_frame_rate()
        samples = self.frame_samples(data, "pcm_s16le")
        bridge = self._open()
        if self.over_max_duration(bridge, samples.size):
            raise self.max_duration_error()
        self.accept(bridge, data, samples.size)
        if not await self._caught_up(self.app.settings.server.vosk_reply_wait_s):
            self.app.metrics.vosk_late_replies.inc()
        await self.ws.send(self._reply())

    async def _reset(self) -> None:
        if self.bridge is None:
            await self.ws.send(self._result([]))
            return
        self.bridge.stream.reset()  # the open utterance (if any) ends now: its final follows
        await self._caught_up(self.app.settings.server.vosk_reply_wait_s)
        finals, self.finals = self.finals, []
        self.partial_text = ""
        await self.ws.send(self._result(finals))

    async def _eof(self) -> None:
        if self.bridge is not None:
            self.bridge.stream.end()
            self.ended = True
            await self._caught_up(self.bridge.end_timeout())  # idle after an end: EndOfStream is out
            finals, self.finals = self.finals, []
        else:
            finals = []
        await self.ws.send(self._result(finals))
        await self.close(CloseCode.NORMAL_CLOSURE, "")

    async def shutdown(self) -> None:
        """Server stopping: send the final result of the open utterance, then close 1001."""
        if self.closing:
            return
        if self.bridge is not None and not self.ended:
            self.ended = True
            self.bridge.stream.end()
            try:
                await self._caught_up(self.bridge.end_timeout())
                if self.finals:
                    await self.ws.send(self._result(self.finals))
                    self.finals = []
            except Exception:
                pass
        self.app.metrics.errors.inc(code="shutdown")
        await self.close(close_code_for("shutdown"), "server shutting down")
