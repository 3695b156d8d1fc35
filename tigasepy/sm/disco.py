"""Service discovery data (XEP-0030) assembled from what extensions declare."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from twisted.words.xish import domish

from tigasepy.sm.events import Target
from tigasepy.xmpp import namespaces as ns

#: Answers a disco query on a node: gets the ``StanzaEvent``, returns the ``<query/>``
#: element (or a Deferred / coroutine of one), or raises ``StanzaError``.
NodeHandler = Callable[[Any], Any]


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
        self._forms: dict[Target, list[domish.Element]] = {}
        self._nodes: dict[Target, dict[str, tuple[NodeHandler | None, NodeHandler | None]]] = {}
        self._watchers: list[Callable[[], None]] = []
        #: Grows whenever the features, identities or forms change (caches compare it).
        self.generation = 0

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every change of the features, identities or forms."""
        self._watchers.append(callback)

    def unwatch(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``."""
        self._watchers = [w for w in self._watchers if w is not callback]

    def _changed(self) -> None:
        self.generation += 1
        for callback in list(self._watchers):
            callback()

    def add_feature(self, var: str, target: Target = Target.HOST) -> None:
        """Advertise ``var`` for ``target``."""
        counts = self._features.setdefault(target, {})
        counts[var] = counts.get(var, 0) + 1
        self._changed()

    def remove_feature(self, var: str, target: Target = Target.HOST) -> None:
        """Withdraw one declaration of ``var``."""
        counts = self._features.get(target, {})
        if counts.get(var, 0) <= 1:
            counts.pop(var, None)
        else:
            counts[var] -= 1
        self._changed()

    def add_identity(self, identity: Identity, target: Target = Target.HOST) -> None:
        """Advertise ``identity`` for ``target``."""
        counts = self._identities.setdefault(target, {})
        counts[identity] = counts.get(identity, 0) + 1
        self._changed()

    def remove_identity(self, identity: Identity, target: Target = Target.HOST) -> None:
        """Withdraw one declaration of ``identity``."""
        counts = self._identities.get(target, {})
        if counts.get(identity, 0) <= 1:
            counts.pop(identity, None)
        else:
            counts[identity] -= 1
        self._changed()

    def features(self, target: Target = Target.HOST) -> list[str]:
        """The sorted feature vars for ``target``."""
        return sorted(self._features.get(target, {}))

    def identities(self, target: Target = Target.HOST) -> list[Identity]:
        """The sorted identities for ``target``."""
        return sorted(self._identities.get(target, {}))

    def add_form(self, form: domish.Element, target: Target = Target.HOST) -> None:
        """Add an extended information form (XEP-0128, a ``jabber:x:data`` result) to disco#info."""
        self._forms.setdefault(target, []).append(form)
        self._changed()

    def remove_form(self, form: domish.Element, target: Target = Target.HOST) -> None:
        """Withdraw ``form``."""
        forms = self._forms.get(target, [])
        self._forms[target] = [f for f in forms if f is not form]
        self._changed()

    def forms(self, target: Target = Target.HOST) -> list[domish.Element]:
        """The extended information forms for ``target``, in registration order."""
        return list(self._forms.get(target, ()))

    def add_node(self, node: str, info: NodeHandler | None = None, items: NodeHandler | None = None,
                 target: Target = Target.HOST) -> None:
        """Answer disco#info and/or disco#items queries on ``node`` with the given handlers.

        Raises:
            ValueError: another extension answers for ``node`` already.
        """
        nodes = self._nodes.setdefault(target, {})
        if node in nodes:
            raise ValueError(f"disco node {node!r} is already handled")
        nodes[node] = (info, items)

    def remove_node(self, node: str, target: Target = Target.HOST) -> None:
        """Stop answering for ``node``."""
        self._nodes.get(target, {}).pop(node, None)

    def node_handler(self, node: str, kind: str, target: Target = Target.HOST) -> NodeHandler | None:
        """The ``"info"`` or ``"items"`` handler for ``node``, or None."""
        handlers = self._nodes.get(target, {}).get(node)
        if handlers is None:
            return None
        return handlers[0] if kind == "info" else handlers[1]

    def info(self, target: Target = Target.HOST) -> domish.Element:
        """The disco#info ``<query/>`` for ``target``: identities, features and forms."""
        result = domish.Element((ns.DISCO_INFO, "query"))
        for identity in self.identities(target):
            element = result.addElement("identity")
            element["category"] = identity.category
            element["type"] = identity.type
            if identity.name:
                element["name"] = identity.name
        for var in self.features(target):
            result.addElement("feature")["var"] = var
        for form in self.forms(target):
            result.addChild(form)
        return result
