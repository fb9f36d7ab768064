"""Property-based tests of the server's protocol parsers (pure functions, no sockets).

Every parser must either return a well-formed value or raise ``ProtocolError`` with a known error code
— never any other exception — whatever a client sends.
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.pcm import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from streamer.server import http as http_routes
from streamer.server.metrics import Registry
from streamer.server.protocol import (
    ENCODINGS,
    ERROR_CLOSE_CODES,
    VOSK_EOF,
    VOSK_RESET,
    ProtocolError,
    StartConfig,
    check_audio,
    parse_text,
    parse_vosk_text,
    vosk_dump,
    vosk_partial,
    vosk_result,
)

EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
start_like = st.fixed_dictionaries(
    {"type": st.just("start")},
    optional={
        "version": json_values | st.just(1),
        "sample_rate": json_values | st.integers(0, 400000) | st.floats(0, 400000),
        "encoding": json_values | st.sampled_from([*ENCODINGS, "mulaw", ""]),
        "partials": json_values,
        "words": json_values,
    },
)
messages = (
    st.text(max_size=200)
    | json_values.map(json.dumps)
    | start_like.map(json.dumps)
    | st.sampled_from(["reset", "end", "start", "bogus", ""]).map(lambda t: json.dumps({"type": t}))
)


@EXAMPLES
@given(messages)
def test_parse_text_returns_a_command_or_a_protocol_error(text):
    try:
        command = parse_text(text)
    except ProtocolError as exc:
        assert exc.code in ERROR_CLOSE_CODES
        assert exc.message
        assert 1000 <= exc.close_code < 5000
        return
    assert command.type in ("start", "reset", "end")
    if command.type == "start":
        cfg = command.start
        assert isinstance(cfg, StartConfig)
        assert MIN_SAMPLE_RATE <= cfg.sample_rate <= MAX_SAMPLE_RATE
        assert cfg.encoding in ENCODINGS
        assert isinstance(cfg.partials, bool) and isinstance(cfg.words, bool)


@EXAMPLES
@given(
    st.integers(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE),
    st.sampled_from(sorted(ENCODINGS)),
    st.booleans(),
    st.booleans(),
)
def test_valid_start_round_trips(rate, encoding, partials, words):
    text = json.dumps(
        {
            "type": "start",
            "version": 1,
            "sample_rate": rate,
            "encoding": encoding,
            "partials": partials,
            "words": words,
        }
    )
    assert parse_text(text).start == StartConfig(rate, encoding, partials, words)


@EXAMPLES
@given(st.integers() | st.floats() | st.booleans() | st.text(max_size=8))
def test_sample_rate_bounds(rate):
    text = json.dumps({"type": "start", "sample_rate": rate})
    ok = (
        not isinstance(rate, bool)
        and isinstance(rate, int | float)
        and math.isfinite(rate)
        and float(rate).is_integer()
        and MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE
    )
    if ok:
        assert parse_text(text).start.sample_rate == int(rate)
    else:
        with pytest.raises(ProtocolError) as info:
            parse_text(text)
        assert info.value.code in ("bad_message", "bad_json")


def test_specific_rejections():
    cases = {
        "not json": "bad_json",
        "[1, 2]": "bad_json",
        '{"type": "start", "sample_rate": NaN}': "bad_json",
        '{"type": "start", "sample_rate": Infinity}': "bad_json",
        '{"type": "start", "sample_rate": 7999}': "bad_message",
        '{"type": "start", "sample_rate": 192001}': "bad_message",
        '{"type": "start", "sample_rate": 1e300}': "bad_message",
        '{"type": "start", "sample_rate": true}': "bad_message",
        '{"type": "start", "encoding": "mp3"}': "bad_message",
        '{"type": "start", "version": 2}': "bad_message",
        '{"type": "start", "partials": "yes"}': "bad_message",
        '{"type": "hello"}': "bad_message",
        '{"kind": "start"}': "bad_message",
        "[" * 100000: "text_too_large",
        "[" * 50000: "bad_json",  # deep nesting: RecursionError becomes bad_json
    }
    for text, code in cases.items():
        with pytest.raises(ProtocolError) as info:
            parse_text(text)
        assert info.value.code == code, text[:40]


@EXAMPLES
@given(st.binary(max_size=256), st.sampled_from(sorted(ENCODINGS)))
def test_check_audio_accepts_whole_finite_samples_only(data, encoding):
    width = ENCODINGS[encoding]
    try:
        samples = check_audio(data, encoding)
    except ProtocolError as exc:
        assert exc.code == "bad_audio"
        if len(data) % width == 0:
            assert encoding == "f32le"
            assert not np.isfinite(np.frombuffer(data, "<f4")).all()
        return
    assert len(data) % width == 0
    assert samples.size == len(data) // width
    if encoding == "f32le":
        assert np.isfinite(samples).all()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_check_audio_rejects_non_finite_floats(bad):
    with pytest.raises(ProtocolError, match="NaN/Inf"):
        check_audio(struct.pack("<3f", 0.1, bad, 0.2), "f32le")
    with pytest.raises(ProtocolError, match="multiple of 2 bytes"):
        check_audio(b"\x00\x01\x02", "pcm_s16le")


# --------------------------------------------------------------------------------------- vosk


@EXAMPLES
@given(st.text(max_size=120) | json_values.map(lambda v: json.dumps({"config": v})))
def test_parse_vosk_text_total(text):
    try:
        message = parse_vosk_text(text)
    except ProtocolError as exc:
        assert exc.code in ERROR_CLOSE_CODES
        return
    assert message.type in ("config", "eof", "reset")
    if message.type == "eof":
        assert text == VOSK_EOF
    if message.type == "reset":
        assert text == VOSK_RESET
    if message.sample_rate is not None:
        assert MIN_SAMPLE_RATE <= message.sample_rate <= MAX_SAMPLE_RATE


def test_vosk_messages_are_byte_exact():
    assert parse_vosk_text('{"eof" : 1}').type == "eof"
    assert parse_vosk_text('{"reset" : 1}').type == "reset"
    # vosk-server compares the raw text: other spellings are not eof/reset
    for text in ('{"eof": 1}', '{"eof":1}', ' {"eof" : 1}', '{"reset": 1}'):
        with pytest.raises(ProtocolError):
            parse_vosk_text(text)
    config = parse_vosk_text('{ "config" : { "sample_rate" : 16000 } }')
    assert (config.type, config.sample_rate) == ("config", 16000)
    assert parse_vosk_text('{"config": {"sample_rate": 8000.0, "words": 0}}').words is False
    with pytest.raises(ProtocolError):
        parse_vosk_text('{"config": {"sample_rate": 1}}')


def test_vosk_formatting_matches_vosk_json_h():
    # What vosk's KaldiRecognizer prints (json::JSON::dump: sorted keys, 2-space pads, %f floats).
    assert vosk_partial("hello wor") == '{\n  "partial" : "hello wor"\n}'
    assert vosk_result([]) == '{\n  "text" : ""\n}'
    final = {
        "text": "one two",
        "words": [
            {"word": "one", "start": 0.87, "end": 1.11, "confidence": 1.0},
            {"word": "two", "start": 1.2, "end": 1.5, "confidence": 0.5},
        ],
    }
    assert vosk_result([final]) == (
        "{\n"
        '  "result" : [{\n'
        '      "conf" : 1.000000,\n'
        '      "end" : 1.110000,\n'
        '      "start" : 0.870000,\n'
        '      "word" : "one"\n'
        "    }, {\n"
        '      "conf" : 0.500000,\n'
        '      "end" : 1.500000,\n'
        '      "start" : 1.200000,\n'
        '      "word" : "two"\n'
        "    }],\n"
        '  "text" : "one two"\n'
        "}"
    )
    assert vosk_result([final], words=False) == '{\n  "text" : "one two"\n}'


vosk_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**9), 10**9) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)


@EXAMPLES
@given(vosk_values)
def test_vosk_dump_is_valid_json_with_the_same_value(value):
    # (floats are printed with 6 decimals, so they are tested separately above)
    assert json.loads(vosk_dump(value)) == value


# ----------------------------------------------------------------------------- metrics, static

_SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="(\\.|[^"\\])*",?)*\})? (-?[0-9.]+(e[+-]?[0-9]+)?|NaN|[+-]Inf)$')


@EXAMPLES
@given(st.lists(st.tuples(st.text(max_size=10), st.floats(0, 100)), max_size=20))
def test_metrics_exposition_is_well_formed(observations):
    registry = Registry()
    counter = registry.counter("t_events_total", "events", ["code"])
    histogram = registry.histogram("t_latency_seconds", "latency", ["type"], buckets=(0.5, 1, 10))
    for label, value in observations:
        counter.inc(value, code=label)
        histogram.observe(value, type="final")
    text = registry.render()
    for line in text.rstrip("\n").split("\n"):  # the exposition format splits on \n only
        assert line.startswith("# ") or _SAMPLE.match(line), line
    if observations:
        buckets = [float(line.rsplit(" ", 1)[1]) for line in text.split("\n") if "_bucket" in line]
        assert buckets == sorted(buckets) and buckets[-1] == len(observations)


@EXAMPLES
@given(
    st.text(alphabet=st.sampled_from(list("./\\%ab_-~\x00")), max_size=30)
    | st.sampled_from(
        ["../secret.txt", "a/../../secret.txt", "/etc/passwd", "..", "%2e%2e/secret.txt", "page.js"]
    )
)
def test_static_files_never_escape_their_folder(tmp_path_factory, name):
    root = tmp_path_factory.mktemp("static")
    web = root / "web"
    web.mkdir()
    (web / "page.js").write_text("ok")
    (root / "secret.txt").write_text("secret")
    response = http_routes.static_file(web, name)
    if response.status_code == 200:
        assert response.body == b"ok"
    assert b"secret" not in response.body


def test_static_content_types(tmp_path: Path):
    (tmp_path / "index.html").write_text("<p>hi</p>")
    (tmp_path / "app.js").write_text("1")
    assert http_routes.static_file(tmp_path, "index.html").headers["Content-Type"].startswith("text/html")
    assert "javascript" in http_routes.static_file(tmp_path, "app.js").headers["Content-Type"]
    assert http_routes.static_file(tmp_path, "missing.css").status_code == 404


@pytest.mark.parametrize(
    "rate", [MIN_SAMPLE_RATE - 1, MIN_SAMPLE_RATE, 44100, MAX_SAMPLE_RATE, MAX_SAMPLE_RATE + 1]
)
def test_the_protocol_and_the_engine_accept_the_same_sample_rates(rate):
    from streamer.pcm import AudioFormatError, check_sample_rate

    def accepted(check) -> bool:
        try:
            check()
        except (ProtocolError, AudioFormatError):
            return False
        return True

    native = accepted(lambda: parse_text(json.dumps({"type": "start", "sample_rate": rate})))
    vosk = accepted(lambda: parse_vosk_text(json.dumps({"config": {"sample_rate": rate}})))
    engine = accepted(lambda: check_sample_rate(rate))
    assert native == vosk == engine == (MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE)
