"""Integration tests: a real tigasepy server in this process, real clients over 127.0.0.1.

Harness design
--------------
- The server is the whole service tree (``build_service``) on the reactor pytest-twisted
  installed. Integration tests need Twisted's *asyncio* reactor, so that the server and
  the slixmpp clients (asyncio) share one event loop in one thread: setup.cfg passes
  ``--reactor=asyncio`` to every run (the rest of the suite is indifferent to the
  reactor). Run with another reactor, these tests fail at once and say so.
- Tests are ``async def`` functions decorated with ``support.xmpp_clients.asyncio_test``;
  pytest-twisted runs them inside the reactor as asyncio tasks, bounded in time.
- Fixtures are synchronous and wait on the reactor through ``pytest_twisted.blockon``.
- Raw-socket scenarios (malformed XML, oversized stanzas, SCRAM -PLUS by hand) use the
  blocking ``support.raw_xmpp.RawXmppClient`` in a worker thread (``asyncio.to_thread``),
  with socket timeouts, while the server keeps running on the loop.

Fixtures: ``xmpp_server`` (a started server; override ``server_overrides`` to change its
config), ``accounts`` (alice, bob, carol created with known passwords), ``clients``
(a ``ClientPool``; its clients are disconnected after the test).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.server import RunningServer, start_server
from support.xmpp_clients import ClientPool, run_in_reactor

#: Test accounts created by the ``accounts`` fixture: user -> password.
USERS = {"alice": "alice-secret-1", "bob": "bob-secret-2", "carol": "carol-secret-3"}


def _require_asyncio_reactor() -> Any:
    from twisted.internet import reactor
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not isinstance(reactor, AsyncioSelectorReactor):
        pytest.fail("integration tests need Twisted's asyncio reactor to share the loop with "
                    "slixmpp: run pytest with --reactor=asyncio (setup.cfg addopts sets it); "
                    f"the installed reactor is {type(reactor).__name__}", pytrace=False)
    return reactor


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    """Config tables merged over the integration defaults; override per module or parametrize."""
    return {}


@pytest.fixture
def xmpp_server(tmp_path: Path, server_overrides: dict[str, Any]) -> Iterator[RunningServer]:
    """A started tigasepy server for ``localhost`` on free loopback ports, stopped after the test."""
    reactor = _require_asyncio_reactor()
    data_dir = (tmp_path / "data").resolve()
    server = run_in_reactor(lambda: start_server(data_dir, reactor, server_overrides))
    try:
        yield server
    finally:
        run_in_reactor(server.stop)


@pytest.fixture
def accounts(xmpp_server: RunningServer) -> dict[str, str]:
    """Creates alice, bob and carol; returns user -> password."""
    from twisted.internet import defer

    run_in_reactor(lambda: defer.gatherResults(
        [xmpp_server.create_account(user, password) for user, password in USERS.items()],
        consumeErrors=True))
    return dict(USERS)


@pytest.fixture
def clients(xmpp_server: RunningServer, accounts: dict[str, str]) -> Iterator[ClientPool]:
    """Makes slixmpp clients for the server's accounts; disconnects them after the test."""
    pool = ClientPool(xmpp_server)
    try:
        yield pool
    finally:
        run_in_reactor(pool.close_all)
