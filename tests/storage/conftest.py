"""Fixtures for the storage contract tests: every store, on every backend.

A test that takes ``stores`` runs once per backend (memory, SQLite in a file
under ``tmp_path``); the stores are migrated before the test and closed after.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from tigasepy.config import Config, ServerConfig, StorageConfig
from tigasepy.storage.factory import Stores, open_stores

BACKENDS = ("memory", "sqlite")


def storage_config(tmp_path: Path, backend: str) -> Config:
    """A config keeping its data under ``tmp_path/data`` with ``backend``."""
    return Config(server=ServerConfig(domains=("example.org",), data_dir=str(tmp_path / "data")),
                  storage=StorageConfig(backend=backend))


@pytest.fixture
def make_config(tmp_path: Path):
    """A function building a storage config under ``tmp_path`` for a backend name."""
    return lambda backend: storage_config(tmp_path, backend)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the storage backend under test."""
    return request.param


@pytest_twisted.async_yield_fixture()
async def stores(tmp_path: Path, backend: str):
    """Migrated stores of ``backend``; closed after the test."""
    opened: Stores = open_stores(storage_config(tmp_path, backend), reactor)
    await opened.start()
    yield opened
    await opened.close()
