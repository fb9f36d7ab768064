"""Every option is checked when settings load (flags and TOML alike), ``--help`` says what each takes, and
the global flags work after the sub-command too."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streamer import cli, config
from streamer.commands import serve

ROOT = Path(__file__).resolve().parent.parent


def parse(argv: list[str]) -> config.Settings:
    parser, subs = cli.build_parser()
    serve.add_arguments(subs["serve"])
    return serve.settings_from_args(parser.parse_args(["serve", *argv]))


# (flag, bad value, words the error must contain)
BAD = [
    ("--streaming.normalization", "foo", "running | window"),
    ("--limits.overload_policy", "foo", "drop_oldest | close"),
    ("--decoder.method", "bream", "auto | greedy | beam"),
    ("--model.dtype", "float64", "float32"),
    ("--model.quantize", "int4", "int8"),
    ("--model.device", "gpu", "cuda:N"),
    ("--server.port", "70000", "0-65535"),
    ("--server.vosk_port", "-1", "0-65535"),
    ("--port", "65536", "0-65535"),
    ("--streaming.chunk_s", "0", "> 0"),
    ("--streaming.left_context_s", "-1", ">= 0"),
    ("--streaming.chunk_s", "nan", "finite"),
    ("--endpoint.min_silence_s", "0", "> 0"),
    ("--endpoint.max_utterance_s", "inf", "finite"),
    ("--endpoint.energy_gate_dbfs", "10", "<= 0"),
    ("--batching.max_batch", "0", ">= 1"),
    ("--decoder.beam_width", "0", ">= 1"),
    ("--limits.max_queued_s", "-1", "> 0"),
    ("--limits.idle_timeout_s", "0", "> 0"),
    ("--limits.max_connections", "0", ">= 1"),
    ("--server.allowed_origins", "https://a.example/", "https://host"),
]


@pytest.mark.parametrize(("flag", "value", "allowed"), BAD, ids=[f"{f}={v}" for f, v, _ in BAD])
def test_a_bad_flag_fails_at_load_naming_the_allowed_values(flag, value, allowed):
    with pytest.raises(ValueError) as error:
        parse([flag, value])
    message = str(error.value)
    assert allowed in message and value in message, message
    assert flag.lstrip("-").split(".")[-1] in message, message  # the option is named


@pytest.mark.parametrize(("flag", "value", "allowed"), BAD[:8], ids=[f"{f}={v}" for f, v, _ in BAD[:8]])
def test_a_bad_toml_value_fails_the_same_way(tmp_path, flag, value, allowed):
    section, field = flag.lstrip("-").split(".")
    toml = tmp_path / "bad.toml"
    toml.write_text(f"[{section}]\n{field} = {value if value.lstrip('-').isdigit() else repr(value)}\n")
    with pytest.raises(ValueError, match=re.escape(allowed)) as error:
        parse(["--config", str(toml)])
    assert str(toml) in str(error.value)
    with pytest.raises(ValueError, match=re.escape(allowed)):
        config.load_toml(toml)


def test_edge_values_that_are_allowed():
    s = parse(["--port", "0", "--endpoint.energy_gate_dbfs=-inf", "--streaming.left_context_s", "0"])
    assert s.server.port == 0 and math.isinf(s.endpoint.energy_gate_dbfs) and s.streaming.left_context_s == 0
    s = parse(["--model.device", "cuda:1", "--server.allowed_origins", "https://a.example:8443,*"])
    assert s.model.device == "cuda:1" and s.server.allowed_origins == ["https://a.example:8443", "*"]
    assert parse(["--model.quantize", "int8"]).model.quantize == "int8"
    assert parse(["--model.dtype", "bfloat16"]).model.dtype == "bfloat16"  # a CPU mode too
    assert parse(["--model.dtype", "auto"]).model.dtype == "auto"
    assert parse(["--model.dtype", "float16", "--model.device", "cuda"]).model.dtype == "float16"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--model.quantize", "int8", "--model.device", "cuda"], "CPU only"),
        (["--model.dtype", "float16"], "needs a CUDA device"),
        (["--server.tls_cert", "/c.pem"], "go together"),
        (["--port", "2700", "--vosk-port", "2700"], "differ"),
    ],
)
def test_rules_over_two_fields(argv, words):
    with pytest.raises(ValueError, match=words):
        parse(argv)


def test_a_later_source_may_fix_an_earlier_joint_problem(tmp_path):
    """Joint rules hold for the final settings: TOML's cert plus the flag's key is fine."""
    toml = tmp_path / "tls.toml"
    toml.write_text('[server]\ntls_cert = "/c.pem"\n')
    s = parse(["--config", str(toml), "--server.tls_key", "/k.pem"])
    assert (s.server.tls_cert, s.server.tls_key) == ("/c.pem", "/k.pem")


def test_defaults_pass_validation_and_every_field_declares_itself():
    config.validate(config.Settings())
    for section_field in dataclasses.fields(config.Settings):
        for f in dataclasses.fields(section_field.default_factory()):  # type: ignore[misc]
            assert isinstance(f.metadata.get("option"), config.Option), f"{section_field.name}.{f.name}"
            assert f.metadata["option"].help, f"{section_field.name}.{f.name} has no help"


def test_help_lists_every_options_allowed_values_and_default():
    _parser, subs = cli.build_parser()
    serve.add_arguments(subs["serve"])
    actions = {a.option_strings[0]: a for a in subs["serve"]._actions if a.option_strings}
    for section_field in dataclasses.fields(config.Settings):
        section = section_field.default_factory()  # type: ignore[misc]
        for name, spec in config.options(section).items():
            text = actions[f"--{section_field.name}.{name}"].help
            assert "default: " in text and spec.help.replace("%", "%%") in text, text
            if spec.choices:
                assert all(str(choice) in text for choice in spec.choices), text
            if spec.min is not None or spec.above is not None or spec.max is not None:
                assert any(sign in text for sign in (">", "<", "-")), text


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamer.cli", *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_refuses_a_bad_option_before_starting_and_takes_v_after_the_command():
    """A daemon with a bad option must not start (it used to report healthy, then refuse every stream);
    ``-v`` after ``serve`` is what systemd/README.md tells users to add to ExecStart=."""
    result = _cli("serve", "-v", "--port", "0", "--streaming.normalization", "foo")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "unrecognized arguments" not in result.stderr
    assert "streaming.normalization" in result.stderr and "running | window" in result.stderr, result.stderr
    assert "listening" not in result.stdout


def test_global_flags_count_before_and_after_the_command():
    parser, subs = cli.build_parser()
    serve.add_arguments(subs["serve"])
    args = parser.parse_args(["-v", "serve", "-vv", "--port", "0"])
    assert args.verbose + args.verbose_after == 3
    args = parser.parse_args(["serve", "--verbose"])
    assert args.verbose + args.verbose_after == 1


def test_serve_help_prints_every_option_with_its_default() -> None:
    """What a user sees: ``serve --help`` names every setting, each with its default."""
    result = _cli("serve", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines
    count = 0
    for section_field in dataclasses.fields(config.Settings):
        section = section_field.default_factory()  # type: ignore[misc]
        for name, spec in config.options(section).items():
            assert f"--{section_field.name}.{name}" in text
            assert " ".join(spec.help.split()) in text, spec.help
            count += 1
    assert text.count("default: ") >= count
