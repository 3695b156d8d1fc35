"""Disco (XEP-0030) nodes and extended information forms (XEP-0128) declared by extensions."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.words.xish import domish

from tests.support.sm_harness import SMHarness, condition
from tigasepy.extensions.disco import ServiceDiscovery
from tigasepy.sm.host import ExtensionHost
from tigasepy.storage.interfaces import IAccountStore
from tigasepy.storage.memory import MemoryAccountStore
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import StanzaError


class Declares:
    """A test extension declaring a form and two nodes."""

    name = "declares"
    protocols = ()
    config_type = None

    def __init__(self, config: None, host: ExtensionHost) -> None:
        form = domish.Element((ns.DATA_FORMS, "x"))
        form["type"] = "result"
        field = form.addElement("field")
        field["var"] = "FORM_TYPE"
        field["type"] = "hidden"
        field.addElement("value", content="urn:example:info")
        host.add_disco_form(form)
        host.add_disco_node("sync", info=self._info, items=self._items)
        host.add_disco_node("async", items=lambda event: defer.succeed(domish.Element((ns.DISCO_ITEMS, "query"))))
        host.add_disco_node("secret", info=self._forbidden)

    def _info(self, event):
        query = domish.Element((ns.DISCO_INFO, "query"))
        query.addElement("feature")["var"] = "urn:example:node"
        return query

    def _items(self, event):
        query = domish.Element((ns.DISCO_ITEMS, "query"))
        item = query.addElement("item")
        item["jid"] = "example.org"
        return query

    def _forbidden(self, event):
        raise StanzaError("forbidden")


@pytest.fixture
def world():
    accounts = MemoryAccountStore()
    accounts.create("alice@example.org", [])
    return SMHarness([(ServiceDiscovery, None), (Declares, None)], {IAccountStore: accounts})


def ask(world, xmlns, node=None):
    alice = world.connect("alice@example.org/a")
    node_attr = f" node='{node}'" if node else ""
    world.send(alice, f"<iq type='get' id='q' to='example.org'><query xmlns='{xmlns}'{node_attr}/></iq>")
    [reply] = alice.sent
    return reply


def test_server_info_carries_declared_forms_after_the_features(world):
    query = ask(world, ns.DISCO_INFO).firstChildElement()
    [form] = query.elements(ns.DATA_FORMS, "x")
    assert [c.name for c in query.elements()][-1] == "x"
    assert str(next(form.elements()).firstChildElement()) == "urn:example:info"


def test_node_handlers_answer_with_the_node_stamped(world):
    info = ask(world, ns.DISCO_INFO, "sync").firstChildElement()
    assert info["node"] == "sync"
    assert [f["var"] for f in info.elements(ns.DISCO_INFO, "feature")] == ["urn:example:node"]
    items = ask(world, ns.DISCO_ITEMS, "sync").firstChildElement()
    assert items["node"] == "sync" and len(list(items.elements())) == 1


def test_async_node_handler(world):
    reply = ask(world, ns.DISCO_ITEMS, "async")
    assert reply["type"] == "result" and reply.firstChildElement()["node"] == "async"


@pytest.mark.parametrize("xmlns,node", [(ns.DISCO_INFO, "unknown"), (ns.DISCO_INFO, "async"),
                                        (ns.DISCO_ITEMS, "secret")])
def test_unknown_node_or_kind_is_item_not_found(world, xmlns, node):
    assert condition(ask(world, xmlns, node)) == "item-not-found"


def test_a_node_handler_error_is_the_reply(world):
    assert condition(ask(world, ns.DISCO_INFO, "secret")) == "forbidden"


def test_unloading_withdraws_forms_and_nodes(world):
    world.sm.unload_extension("declares")
    query = ask(world, ns.DISCO_INFO).firstChildElement()
    assert list(query.elements(ns.DATA_FORMS, "x")) == []
    alice = world.connect("alice@example.org/b")
    world.send(alice, f"<iq type='get' id='q' to='example.org'><query xmlns='{ns.DISCO_INFO}' node='sync'/></iq>")
    assert condition(alice.sent[0]) == "item-not-found"


def test_a_node_can_be_handled_by_one_extension_only(world):
    with pytest.raises(ValueError):
        world.sm.disco.add_node("sync")
