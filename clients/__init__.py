"""Clients of the conformer-streamer daemon (docs/protocol.md v1).

* ``python -m clients.caption`` — live terminal captions from a microphone (via a server or stand-alone).
* ``conformer-stream-file`` (``python -m clients.stream_file``) — stream an audio file, print text, JSON lines or SRT subtitles.
* ``clients/web/`` — the browser captioning page the daemon serves at ``/``.
"""
