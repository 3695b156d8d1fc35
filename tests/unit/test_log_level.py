"""``tigasepy.log_level``: tigasepy's events below ``[server] log_level`` are dropped where made."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.logger import LogLevel

from tigasepy.config import ConfigError, config_from_dict
from tigasepy.log_level import LEVELS, Logger, log_level, set_log_level


@pytest.fixture
def restore_level() -> Iterator[None]:
    before = log_level()
    yield
    set_log_level(before)


def _emit_each_level(level: str) -> list[LogLevel]:
    events: list[dict[str, Any]] = []
    logger = Logger(namespace="tigasepy.test", observer=events.append)
    set_log_level(level)
    logger.debug("d")
    logger.info("i")
    logger.warn("w")
    logger.error("e")
    logger.critical("c")
    return [e["log_level"] for e in events]


def test_events_below_the_level_never_reach_the_observer(restore_level: None) -> None:
    assert _emit_each_level("info") == [LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical]
    assert _emit_each_level("error") == [LogLevel.error, LogLevel.critical]
    assert _emit_each_level("debug") == [LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error,
                                         LogLevel.critical]


def test_failures_are_logged_at_critical_whatever_the_level(restore_level: None) -> None:
    events: list[dict[str, Any]] = []
    logger = Logger(namespace="tigasepy.test", observer=events.append)
    set_log_level("critical")
    try:
        1 / 0
    except ZeroDivisionError:
        logger.failure("boom")
    assert [e["log_level"] for e in events] == [LogLevel.critical]


def test_a_logger_on_a_class_keeps_the_gate(restore_level: None) -> None:
    events: list[dict[str, Any]] = []

    class Thing:
        log = Logger(observer=events.append)

    set_log_level("warn")
    Thing().log.info("hidden")
    Thing().log.warn("shown")
    assert [e["log_format"] for e in events] == ["shown"]


def test_an_unknown_level_is_refused(restore_level: None) -> None:
    with pytest.raises(ValueError):
        set_log_level("verbose")
    assert log_level() in LEVELS


def test_config_refuses_an_unknown_log_level_naming_the_option() -> None:
    with pytest.raises(ConfigError) as error:
        config_from_dict({"server": {"domains": ["a.example"], "log_level": "loud"}})
    assert "log_level" in str(error.value) and "debug" in str(error.value)


def test_info_is_the_default_level_of_a_config() -> None:
    assert config_from_dict({"server": {"domains": ["a.example"]}}).server.log_level == "info"
