"""YAML-ish text in a configuration file gives ``ConfigError`` or ``Settings``, nothing else."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config import ConfigError, Settings, load_settings

FRAGMENTS = (
    "server:",
    "proxy:",
    "trusted_proxies:",
    "client_ip_headers:",
    "local:",
    "networks:",
    "hosts:",
    "auth:",
    "token:",
    "token_file:",
    "allowed_origins:",
    "rate_limit:",
    "pairing:",
    "metrics:",
    "upstreams:",
    "logging:",
    "store:",
    "data_dir:",
    "port:",
    "workers:",
    "prefix:",
    "url:",
    "level:",
    " ",
    "  ",
    "\n",
    "\n  ",
    "\n    ",
    "- ",
    ": ",
    ",",
    "[",
    "]",
    "{",
    "}",
    "'",
    '"',
    "#",
    "&a ",
    "*a",
    "<<: ",
    "? ",
    "!!int ",
    "!!float ",
    "!!str ",
    "!!binary ",
    "!!timestamp ",
    "---",
    "...",
    "%YAML 1.1\n",
    "|\n",
    ">\n",
    "\t",
    "~",
    "null",
    "yes",
    "on",
    "0x1F",
    "1e400",
    "-1",
    "65536",
    "18789",
    "10.0.0.0/8",
    "10.0.0.5/24",
    "0.0.0.0/0",
    "::/0",
    "unix",
    "127.0.0.1",
    "x-forwarded-for",
    "forwarded",
    "http://127.0.0.1:9000",
    "/app/",
    "*",
    "\x00",
    "\ufeff",
    "é",
)

yamlish = st.one_of(
    st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join),
    st.text(max_size=200),
)

_DIRECTORY = Path(tempfile.mkdtemp(prefix="edge-fuzz-config-"))


def _load(text: str) -> Settings:
    path = _DIRECTORY / "edge.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return load_settings(path, environ={})


@settings(max_examples=800, deadline=None)
@given(text=yamlish)
def test_yamlish_text_is_settings_or_a_config_error(text: str) -> None:
    try:
        loaded = _load(text)
    except ConfigError as error:
        assert error.problems and all(isinstance(line, str) and line for line in error.problems)
        assert "Traceback" not in str(error)
    else:
        assert isinstance(loaded, Settings)


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object/apply:os.system ['true']",
        "server: &s {port: *s}",
        "proxy:\n  trusted_proxies: [10.0.0.0/8]\nproxy: {}",
        "server:\n  port: 1e400",
        "\udcff: 1",
    ],
)
def test_hostile_yaml_is_refused_with_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        _load(text)


# Found by the fuzzer: PyYAML's constructor raises RecursionError, ValueError,
# TypeError or IndexError for these, which parse_yaml turns into a ConfigError
# naming the file.
CONSTRUCTOR_BREAKERS = {
    "nested lists": "[" * 5000,
    "nested mappings": "a: " + "{a: " * 3000,
    "int tag on a word": "!!int server:",
    "int tag on nothing": "!!int ",
    "mapping as a key": "? server:",
}


@pytest.mark.parametrize("text", CONSTRUCTOR_BREAKERS.values(), ids=CONSTRUCTOR_BREAKERS.keys())
def test_yaml_that_breaks_the_constructor_is_refused_with_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(text)
    (problem,) = caught.value.problems
    assert problem.startswith(str(_DIRECTORY / "edge.yaml") + ": ")


def test_a_constructor_fault_never_echoes_the_value_it_choked_on() -> None:
    secret = "tok-" + "s3cr3t" * 8
    for text in (f"auth:\n  token: !!int {secret}\n", f"auth:\n  token: !!float {secret}\n"):
        with pytest.raises(ConfigError) as caught:
            _load(text)
        assert secret not in str(caught.value) and secret.lower() not in str(caught.value)
        assert "check explicit tags" in str(caught.value)
