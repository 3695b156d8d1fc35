"""[http] parsing, validation, and the example in docs/configuration.md."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tigasepy.config import ConfigError, HttpConfig, config_from_dict

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_docs_example_is_the_defaults() -> None:
    text = DOC.read_text("utf-8")
    section = text.split("## `[http]`", 1)[1]
    block = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    raw = tomllib.loads(block)
    config = config_from_dict({"server": {"domains": ["example.org"]}, **raw})
    assert config.http == HttpConfig()


@pytest.mark.parametrize("bad", [
    {"port": 70000}, {"websocket_path": "ws"}, {"bosh_path": "/a/b"}, {"upload_path": "/http-bind"},
    {"public_url": "ftp://x"}, {"bosh_max_hold": 0}, {"upload": {"max_file_size": 0}},
    {"upload": {"domain": "bad domain"}}, {"nope": 1}])
def test_bad_values(bad: dict) -> None:
    with pytest.raises(ConfigError):
        config_from_dict({"server": {"domains": ["example.org"]}, "http": bad})


def test_generated_config_documents_http() -> None:
    from tigasepy.config import default_config_text

    text = default_config_text("example.org")
    assert "[http]" in text and "[http.upload]" in text
    config = config_from_dict(tomllib.loads(text))
    assert config.http == HttpConfig()
