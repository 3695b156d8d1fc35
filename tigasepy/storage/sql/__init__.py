"""SQL implementations of the storage interfaces, one module per area.

Each module holds module-level ``*_txn(cursor, engine, ...)`` functions (usable by
``Database.run_interaction`` and, synchronously, by ``run_sync``) and one
``Sql*Store`` class that runs them.
"""

from tigasepy.storage.sql.accounts import SqlAccountStore
from tigasepy.storage.sql.offline import SqlOfflineStore
from tigasepy.storage.sql.roster import SqlRosterStore

__all__ = ["SqlAccountStore", "SqlOfflineStore", "SqlRosterStore"]
