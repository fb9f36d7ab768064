"""The websocket daemon behind ``conformer-streamer serve`` (protocol: docs/protocol.md).

``app`` routing, admission and lifecycle; ``native`` (/v1/stream), ``vosk`` (--vosk-port), ``listen``
(/v1/listen) and ``mic`` (serve --mic); ``protocol`` parses what clients send; ``http`` and ``metrics``
serve /healthz, /metrics and the browser page.
"""
