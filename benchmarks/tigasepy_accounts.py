#!/usr/bin/env python3
"""Create load accounts user1..userN (password ``password``) in a tigasepy config's store.

    PYTHONPATH=. python benchmarks/tigasepy_accounts.py tigasepy.toml 10000

Goes through the storage API (``tigasepy.loadtest.accounts.bulk_create``), deriving
the SCRAM keys once instead of once per account as ``tigasepy user add`` does.
"""

from __future__ import annotations

import sys
import time

from twisted.internet import defer, task

from tigasepy.config import load_config
from tigasepy.loadtest.accounts import bulk_create
from tigasepy.storage.factory import open_stores
from tigasepy.storage.interfaces import IAccountStore


async def create(reactor, config_path: str, count: int) -> None:
    config = load_config(config_path)
    stores = open_stores(config, reactor)
    await stores.start()
    started = time.monotonic()
    try:
        created = await bulk_create(stores.get(IAccountStore), config.server.domains[0], range(1, count + 1),
                                    hashes=config.auth.scram_hashes, iterations=config.auth.scram_iterations)
    finally:
        await stores.close()
    print(f"{created} accounts created in {time.monotonic() - started:.1f}s", file=sys.stderr)


def main(reactor, config_path: str, count: str) -> defer.Deferred:
    return defer.Deferred.fromCoroutine(create(reactor, config_path, int(count)))


if __name__ == "__main__":
    task.react(main, sys.argv[1:3])
