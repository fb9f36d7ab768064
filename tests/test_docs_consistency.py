"""What the docs and examples promise matches the code: the README's Debian packages are setup.sh's, the
example daemon configuration shows the defaults, and the file client's usage names its installed script."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from clients import stream_file
from streamer import config

ROOT = Path(__file__).resolve().parent.parent


def test_readme_lists_the_debian_packages_setup_sh_test_installs():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    packages = re.search(r"test\) apt_packages=\(([^)]*)\)", setup).group(1).split()
    readme = " ".join((ROOT / "README.md").read_text().split())
    listed = re.search(
        r"`setup\.sh test` also installs the Debian packages the tests drive \(([^;)]*)", readme
    )
    assert listed is not None and listed.group(1).split() == packages, (listed and listed.group(1), packages)


def _option_lines(text: str) -> list[tuple[str, str, str, bool]]:
    """(section, key, value, commented) of each ``key = value`` line of the example TOML."""
    out, section = [], ""
    for line in text.splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line.strip()):
            section = m.group(1)
        elif m := re.fullmatch(r"(#\s*)?(\w+) = (.+?)(\s+#.*)?", line.strip()):
            out.append((section, m.group(2), m.group(3), m.group(1) is not None))
    return out


def test_example_config_shows_the_defaults_commented_out():
    text = (ROOT / "systemd" / "conformer-streamer.toml").read_text()
    assert tomllib.loads(text) == {s: {} for s in tomllib.loads(text)}, "an option is set, not commented out"
    defaults = config.Settings()
    lines = _option_lines(text)
    assert lines
    for section, key, value, commented in lines:
        assert commented, f"[{section}] {key} is set; the example shows defaults commented out"
        default = getattr(getattr(defaults, section), key)  # an unknown option fails here
        if default is not None and not isinstance(default, list):
            shown = tomllib.loads(f"v = {value}")["v"]
            assert shown == default, f"[{section}] {key} shows {shown!r}, the default is {default!r}"
    # uncommented, every line is a valid setting: the examples of unset options too
    uncommented = re.sub(r"(?m)^# (\w+ = )", r"\1", text)
    config.validate(config.apply(config.Settings(), tomllib.loads(uncommented), "example"))


def test_every_option_in_the_example_exists():
    sections = {f.name for f in dataclasses.fields(config.Settings)}
    for section, key, _, _ in _option_lines((ROOT / "systemd" / "conformer-streamer.toml").read_text()):
        assert section in sections and key in config.options(getattr(config.Settings(), section)), key


def test_file_client_usage_names_its_installed_script():
    assert stream_file.build_parser().format_usage().startswith("usage: conformer-stream-file ")
    assert "python -m clients.stream_file talk" not in stream_file.__doc__
