"""Ad-hoc commands (XEP-0050) and service administration (XEP-0133) with slixmpp over sockets.

alice is the admin (``[server] admins``); bob and carol are not.
"""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from support.xmpp_clients import CLIENT, ClientPool, TestClient, asyncio_test, stanza_text

COMMANDS = "http://jabber.org/protocol/commands"
ADMIN = "http://jabber.org/protocol/admin"
DATA = "jabber:x:data"

pytestmark = pytest.mark.parametrize("server_overrides", [{"server": {"admins": ["alice@localhost"]}}])


def submit_form(fields: dict[str, str | list[str]]) -> ET.Element:
    form = ET.Element(f"{{{DATA}}}x", {"type": "submit"})
    form_type = ET.SubElement(form, f"{{{DATA}}}field", {"var": "FORM_TYPE", "type": "hidden"})
    ET.SubElement(form_type, f"{{{DATA}}}value").text = ADMIN
    for var, values in fields.items():
        field = ET.SubElement(form, f"{{{DATA}}}field", {"var": var})
        for value in values if isinstance(values, list) else [values]:
            ET.SubElement(field, f"{{{DATA}}}value").text = value
    return form


async def run_command(client: TestClient, name: str, fields: dict[str, Any]) -> Any:
    """Execute ``admin#name`` on the server, submit ``fields``; returns the final command result."""
    adhoc = client.plugin["xep_0050"]
    node = f"{ADMIN}#{name}"
    started = await adhoc.send_command("localhost", node, timeout=5)
    assert started["command"]["status"] == "executing"
    assert started.xml.find(f"{{{COMMANDS}}}command/{{{DATA}}}x") is not None
    return await adhoc.send_command("localhost", node, action="complete", payload=submit_form(fields),
                                    sessionid=started["command"]["sessionid"], timeout=5)


async def admin_client(clients: ClientPool) -> TestClient:
    alice = await clients.login("alice", resource="console")
    alice.register_plugin("xep_0050")
    return alice


@asyncio_test
async def test_admin_lists_the_commands(clients: ClientPool) -> None:
    alice = await admin_client(clients)
    items = await alice.plugin["xep_0050"].get_commands("localhost", timeout=5)
    nodes = {item[1] for item in items["disco_items"]["items"]}
    assert {f"{ADMIN}#add-user", f"{ADMIN}#delete-user", f"{ADMIN}#announce"} <= nodes


@asyncio_test
async def test_admin_adds_a_user_who_can_then_log_in(clients: ClientPool) -> None:
    alice = await admin_client(clients)
    done = await run_command(alice, "add-user", {"accountjid": "dave@localhost", "password": "dave-pw-1",
                                                 "password-verify": "dave-pw-1"})
    assert done["command"]["status"] == "completed"
    clients.server.passwords["dave@localhost"] = "dave-pw-1"
    dave = await clients.login("dave", resource="new")
    assert dave.boundjid.bare == "dave@localhost"


@asyncio_test
async def test_a_non_admin_is_forbidden(clients: ClientPool) -> None:
    bob = await clients.login("bob", resource="b")
    bob.register_plugin("xep_0050")
    items = await bob.plugin["xep_0050"].get_commands("localhost", timeout=5)
    assert list(items["disco_items"]["items"]) == []
    with pytest.raises(IqError) as raised:
        await bob.plugin["xep_0050"].send_command("localhost", f"{ADMIN}#add-user", timeout=5)
    assert raised.value.iq["error"]["condition"] == "forbidden"


@asyncio_test
async def test_a_malformed_form_is_a_bad_payload(clients: ClientPool) -> None:
    alice = await admin_client(clients)
    with pytest.raises(IqError) as raised:
        await run_command(alice, "add-user", {"accountjid": "not a jid@@", "password": "x"})
    error = raised.value.iq.xml.find(f"{{{CLIENT}}}error")
    assert raised.value.iq["error"]["condition"] == "bad-request"
    assert error.find(f"{{{COMMANDS}}}bad-payload") is not None


@asyncio_test
async def test_announce_reaches_two_online_users(clients: ClientPool) -> None:
    bob = await clients.login("bob", resource="b", available=True)
    carol = await clients.login("carol", resource="c")
    alice = await admin_client(clients)
    done = await run_command(alice, "announce", {"announcement": ["Maintenance at noon.", "Back soon."]})
    assert done["command"]["status"] == "completed"
    for client in (bob, carol):
        message = await client.messages.wait_for(lambda m: m["type"] == "headline", what="the announcement")
        assert message["from"] == "localhost"
        assert stanza_text(message, f"{{{CLIENT}}}body") == "Maintenance at noon.\nBack soon."
