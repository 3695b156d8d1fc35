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
    them being unloaded, still leave it advertised. A registration may be hidden on some
    hosted domains (``hidden_on``: an extension those virtual hosts do not serve); the
    lookups given a ``domain`` leave out what every registration hides there.
    """

    def __init__(self) -> None:
        self._features: dict[Target, dict[str, int]] = {}
        self._identities: dict[Target, dict[Identity, int]] = {}
        self._forms: dict[Target, list[domish.Element]] = {}
        # (target, feature var / identity / id(form)) -> the hidden_on of each registration;
        # only registrations hidden somewhere are recorded.
        self._hidden: dict[tuple[Target, Any], list[frozenset[str]]] = {}
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

    @property
    def varies_by_domain(self) -> bool:
        """True when some registration is hidden on some domain (virtual hosts differ)."""
        return bool(self._hidden)

    def _hide(self, key: tuple[Target, Any], hidden_on: frozenset[str]) -> None:
        self._hidden.setdefault(key, []).append(hidden_on)

    def _unhide(self, key: tuple[Target, Any], hidden_on: frozenset[str]) -> None:
        hidden = self._hidden.get(key)
        if hidden and hidden_on in hidden:
            hidden.remove(hidden_on)
            if not hidden:
                del self._hidden[key]

    def _shown(self, key: tuple[Target, Any], count: int, domain: str | None) -> bool:
        """True unless every one of the ``count`` registrations of ``key`` hides ``domain``."""
        if domain is None:
            return True
        hidden = self._hidden.get(key)
        return not hidden or len(hidden) < count or any(domain not in h for h in hidden)

    def add_feature(self, var: str, target: Target = Target.HOST, hidden_on: frozenset[str] = frozenset()) -> None:
        """Advertise ``var`` for ``target`` (not on the domains ``hidden_on``)."""
        counts = self._features.setdefault(target, {})
        counts[var] = counts.get(var, 0) + 1
        if hidden_on:
            self._hide((target, var), hidden_on)
        self._changed()

    def remove_feature(self, var: str, target: Target = Target.HOST, hidden_on: frozenset[str] = frozenset()) -> None:
        """Withdraw one declaration of ``var`` (made with ``hidden_on``)."""
        if hidden_on:
            self._unhide((target, var), hidden_on)
        counts = self._features.get(target, {})
        if counts.get(var, 0) <= 1:
            counts.pop(var, None)
        else:
            counts[var] -= 1
        self._changed()

    def add_identity(self, identity: Identity, target: Target = Target.HOST,
                     hidden_on: frozenset[str] = frozenset()) -> None:
        """Advertise ``identity`` for ``target`` (not on the domains ``hidden_on``)."""
        counts = self._identities.setdefault(target, {})
        counts[identity] = counts.get(identity, 0) + 1
        if hidden_on:
            self._hide((target, identity), hidden_on)
        self._changed()

    def remove_identity(self, identity: Identity, target: Target = Target.HOST,
                        hidden_on: frozenset[str] = frozenset()) -> None:
        """Withdraw one declaration of ``identity`` (made with ``hidden_on``)."""
        if hidden_on:
            self._unhide((target, identity), hidden_on)
        counts = self._identities.get(target, {})
        if counts.get(identity, 0) <= 1:
            counts.pop(identity, None)
        else:
            counts[identity] -= 1
        self._changed()

    def features(self, target: Target = Target.HOST, domain: str | None = None) -> list[str]:
        """The sorted feature vars for ``target`` (as advertised on ``domain`` when given)."""
        counts = self._features.get(target, {})
        return sorted(var for var, count in counts.items() if self._shown((target, var), count, domain))

    def identities(self, target: Target = Target.HOST, domain: str | None = None) -> list[Identity]:
        """The sorted identities for ``target`` (as advertised on ``domain`` when given)."""
        counts = self._identities.get(target, {})
        return sorted(i for i, count in counts.items() if self._shown((target, i), count, domain))

    def add_form(self, form: domish.Element, target: Target = Target.HOST,
                 hidden_on: frozenset[str] = frozenset()) -> None:
        """Add an extended information form (XEP-0128, a ``jabber:x:data`` result) to disco#info
        (not on the domains ``hidden_on``)."""
        self._forms.setdefault(target, []).append(form)
        if hidden_on:
            self._hide((target, id(form)), hidden_on)
        self._changed()

    def remove_form(self, form: domish.Element, target: Target = Target.HOST) -> None:
        """Withdraw ``form``."""
        forms = self._forms.get(target, [])
        self._forms[target] = [f for f in forms if f is not form]
        self._hidden.pop((target, id(form)), None)
        self._changed()

    def forms(self, target: Target = Target.HOST, domain: str | None = None) -> list[domish.Element]:
        """The extended information forms for ``target`` (on ``domain`` when given), in
        registration order."""
        return [f for f in self._forms.get(target, ()) if self._shown((target, id(f)), 1, domain)]

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

    def info(self, target: Target = Target.HOST, domain: str | None = None) -> domish.Element:
        """The disco#info ``<query/>`` for ``target``: identities, features and forms (as
        advertised on ``domain`` when given)."""
        result = domish.Element((ns.DISCO_INFO, "query"))
        for identity in self.identities(target, domain):
            element = result.addElement("identity")
            element["category"] = identity.category
            element["type"] = identity.type
            if identity.name:
                element["name"] = identity.name
        for var in self.features(target, domain):
            result.addElement("feature")["var"] = var
        for form in self.forms(target, domain):
            result.addChild(form)
        return result
