"""Creating many test accounts quickly, straight through tigasepy's storage API.

``tigasepy user add`` derives fresh SCRAM keys per call (PBKDF2 with a random salt,
once per hash), which is right for real accounts and far too slow for 100,000 load
accounts. ``bulk_create`` derives the credentials once per distinct password and
reuses them (same salt for the same password): acceptable only for throw-away load
accounts, which is all this module is for.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from twisted.internet import defer

from tigasepy.auth.scram import make_credential
from tigasepy.storage.interfaces import AccountExists, ScramCredential


class CredentialMaker:
    """SCRAM credentials per password, derived once each (bounded by the distinct passwords)."""

    def __init__(self, hashes: Sequence[str] = ("SHA-1", "SHA-256"), iterations: int = 4096,
                 salt: bytes = b"tigasepy-loadtst") -> None:
        self.hashes = tuple(hashes)
        self.iterations = iterations
        self.salt = salt
        self._made: dict[str, list[ScramCredential]] = {}

    def __call__(self, password: str) -> list[ScramCredential]:
        creds = self._made.get(password)
        if creds is None:
            if len(self._made) > 100_000:
                self._made.clear()
            creds = self._made[password] = [make_credential(h, password, self.iterations, salt=self.salt)
                                            for h in self.hashes]
        return creds


def bulk_create(store: Any, domain: str, numbers: Iterable[int], *,
                user_pattern: str = "user{n}", password_pattern: str = "password",
                hashes: Sequence[str] = ("SHA-1", "SHA-256"), iterations: int = 4096,
                parallel: int = 50) -> "defer.Deferred[int]":
    """Create ``user_pattern@domain`` for every number in ``store`` (an ``IAccountStore``).

    Existing accounts are kept.

    Returns:
        A Deferred firing with the number of accounts created.
    """
    maker = CredentialMaker(hashes, iterations)
    semaphore = defer.DeferredSemaphore(parallel)
    created = [0]

    def one(n: int) -> Any:
        jid = f"{user_pattern.format(n=n)}@{domain}"
        d = store.create(jid, maker(password_pattern.format(n=n)))

        def done(_: Any) -> None:
            created[0] += 1

        def exists(f: Any) -> None:
            f.trap(AccountExists)

        return d.addCallbacks(done, exists)

    d = defer.gatherResults([semaphore.run(one, n) for n in numbers], consumeErrors=True)
    return d.addCallback(lambda _: created[0])
