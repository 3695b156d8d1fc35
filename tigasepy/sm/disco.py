"""Service discovery data (XEP-0030) assembled from what extensions declare."""

from __future__ import annotations

from dataclasses import dataclass

from tigasepy.sm.events import Target


@dataclass(frozen=True, order=True)
class Identity:
    """A disco identity (category/type/name)."""

    category: str
    type: str
    name: str = ""


class DiscoRegistry:
    """Features and identities per target (the server itself, or an account).

    Counts registrations so that two extensions declaring one feature, and one of
    them being unloaded, still leave it advertised.
    """

    def __init__(self) -> None:
        self._features: dict[Target, dict[str, int]] = {}
        self._identities: dict[Target, dict[Identity, int]] = {}

    def add_feature(self, var: str, target: Target = Target.HOST) -> None:
        """Advertise ``var`` for ``target``."""
        counts = self._features.setdefault(target, {})
        counts[var] = counts.get(var, 0) + 1

    def remove_feature(self, var: str, target: Target = Target.HOST) -> None:
        """Withdraw one declaration of ``var``."""
        counts = self._features.get(target, {})
        if counts.get(var, 0) <= 1:
            counts.pop(var, None)
        else:
            counts[var] -= 1

    def add_identity(self, identity: Identity, target: Target = Target.HOST) -> None:
        """Advertise ``identity`` for ``target``."""
        counts = self._identities.setdefault(target, {})
        counts[identity] = counts.get(identity, 0) + 1

    def remove_identity(self, identity: Identity, target: Target = Target.HOST) -> None:
        """Withdraw one declaration of ``identity``."""
        counts = self._identities.get(target, {})
        if counts.get(identity, 0) <= 1:
            counts.pop(identity, None)
        else:
            counts[identity] -= 1

    def features(self, target: Target = Target.HOST) -> list[str]:
        """The sorted feature vars for ``target``."""
        return sorted(self._features.get(target, {}))

    def identities(self, target: Target = Target.HOST) -> list[Identity]:
        """The sorted identities for ``target``."""
        return sorted(self._identities.get(target, {}))
