"""Roster versioning (XEP-0237) and the server's entity capabilities (XEP-0115) over real sockets."""

from __future__ import annotations

import base64
import hashlib
from xml.etree import ElementTree as ET

from support.xmpp_clients import ClientPool, asyncio_test, online

ROSTER = "jabber:iq:roster"
ROSTERVER = "urn:xmpp:features:rosterver"
CAPS = "http://jabber.org/protocol/caps"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DATA = "jabber:x:data"


async def roster_get(client, ver: str | None):
    iq = client.make_iq_get()
    query = ET.Element(f"{{{ROSTER}}}query")
    if ver is not None:
        query.set("ver", ver)
    iq.append(query)
    return await iq.send(timeout=5)


def last_features(client) -> ET.Element:
    return client.stream_features.items[-1]


@asyncio_test
async def test_roster_version_unchanged_gets_an_empty_result(clients: ClientPool) -> None:
    """The rosterver feature is offered; ver='' gets the roster with a version, that version an
    empty result; after a change the full roster with a new version, which pushes carry too."""
    alice = await clients.login("alice", resource="a")
    assert last_features(alice).find(f"{{{ROSTERVER}}}ver") is not None
    full = await roster_get(alice, "")
    ver = full.xml.find(f"{{{ROSTER}}}query").get("ver")
    assert ver
    same = await roster_get(alice, ver)
    assert same["type"] == "result" and len(same.xml) == 0
    alice.update_roster("bob@localhost", name="Bob")
    push = await alice.roster_pushes.wait_for(what="the roster push")
    pushed_ver = push.xml.find(f"{{{ROSTER}}}query").get("ver")
    assert pushed_ver and pushed_ver != ver
    changed = await roster_get(alice, ver)
    query = changed.xml.find(f"{{{ROSTER}}}query")
    assert query.get("ver") == pushed_ver
    assert [i.get("jid") for i in query.iter(f"{{{ROSTER}}}item")] == ["bob@localhost"]
    again = await roster_get(alice, pushed_ver)
    assert len(again.xml) == 0


def _verification_string(query: ET.Element) -> str:
    """XEP-0115 section 5.1, written independently of the server's code."""
    s = ""
    identities = sorted((i.get("category"), i.get("type"), i.get("{http://www.w3.org/XML/1998/namespace}lang", ""),
                         i.get("name", "")) for i in query.findall(f"{{{DISCO_INFO}}}identity"))
    for identity in identities:
        s += "/".join(identity) + "<"
    for var in sorted(f.get("var") for f in query.findall(f"{{{DISCO_INFO}}}feature")):
        s += var + "<"
    forms = []
    for form in query.findall(f"{{{DATA}}}x"):
        fields = {f.get("var"): sorted(v.text or "" for v in f.findall(f"{{{DATA}}}value"))
                  for f in form.findall(f"{{{DATA}}}field")}
        if "FORM_TYPE" in fields:
            forms.append((fields.pop("FORM_TYPE")[0], fields))
    for form_type, fields in sorted(forms):
        s += form_type + "<"
        for var in sorted(fields):
            s += var + "<" + "".join(v + "<" for v in fields[var])
    return base64.b64encode(hashlib.sha1(s.encode("utf-8")).digest()).decode()


@asyncio_test
async def test_caps_ver_in_stream_features_matches_disco_info(clients: ClientPool) -> None:
    """The <c/> of the authenticated stream features hashes the server's disco#info, and the
    server answers disco#info on node#ver with the same identities and features."""
    alice = await online(clients, "alice", "a")
    caps = last_features(alice).find(f"{{{CAPS}}}c")
    assert caps is not None and caps.get("hash") == "sha-1"
    node, ver = caps.get("node"), caps.get("ver")
    for query_node in (None, f"{node}#{ver}"):
        iq = alice.make_iq_get(ito="localhost")
        query = ET.Element(f"{{{DISCO_INFO}}}query")
        if query_node:
            query.set("node", query_node)
        iq.append(query)
        result = await iq.send(timeout=5)
        answer = result.xml.find(f"{{{DISCO_INFO}}}query")
        assert answer.get("node") == query_node
        assert _verification_string(answer) == ver
        assert CAPS in {f.get("var") for f in answer.findall(f"{{{DISCO_INFO}}}feature")}
