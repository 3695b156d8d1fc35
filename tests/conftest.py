"""Shared pytest setup for tigasepy's tests.

- Tests under ``tests/integration/`` get the ``integration`` marker automatically, so
  ``pytest -m "not integration"`` is the fast run.
- The reactor is pytest-twisted's, one per run: ``--reactor=asyncio`` from setup.cfg's
  addopts, because the integration tests share the asyncio loop with slixmpp. The rest
  of the suite is reactor-agnostic; ``--reactor=default`` runs it on epoll as twistd does.
- ``in_ci`` / ``missing_service``: a test that needs an outside service (PostgreSQL,
  Redis, LDAP) skips locally when it is absent and fails when ``CI=true``, where
  ``.ci/run`` starts those services.
- ``log_events``: the twisted.logger events emitted during a test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from twisted.logger import globalLogPublisher

from tigasepy.log_level import log_level, set_log_level

_INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration/ as ``integration``."""
    for item in items:
        if _INTEGRATION_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


def running_in_ci() -> bool:
    """True when the tests run under CI (``CI=true``), where every service must be up."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def in_ci() -> bool:
    """Whether this run is a CI run (``CI=true``)."""
    return running_in_ci()


@pytest.fixture
def missing_service() -> Callable[[str], NoReturn]:
    """Call with a reason when a needed outside service is absent.

    Skips the test locally; fails it under CI, so that a CI run never passes by
    skipping what it was meant to check.
    """

    def missing(reason: str) -> NoReturn:
        if running_in_ci():
            pytest.fail(f"{reason} (required when CI=true)", pytrace=False)
        pytest.skip(reason)

    return missing


@pytest.fixture
def log_events() -> Iterator[list[dict[str, Any]]]:
    """A list that receives every twisted.logger event emitted while the test runs.

    tigasepy's debug events included: the level is ``debug`` while the test runs (a server
    the test starts sets its own ``[server] log_level``, ``debug`` in ``support.server``).
    """
    events: list[dict[str, Any]] = []
    observer = events.append
    level = log_level()
    set_log_level("debug")
    globalLogPublisher.addObserver(observer)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observer)
        set_log_level(level)
