"""Ad-hoc commands (XEP-0050) and service administration (XEP-0133) over the SM harness."""

from __future__ import annotations

import pytest
from twisted.words.xish import domish
from zope.interface.verify import verifyObject

from tests.support.presence_kit import iq, login, make_stores, make_world, put
from tests.support.sm_harness import condition
from tigasepy.admin.commands import is_admin
from tigasepy.config import Config, ServerConfig
from tigasepy.extensions import BUILTIN, load_class
from tigasepy.extensions.adhoc import COMMANDS, AdhocCommands, AdhocConfig
from tigasepy.extensions.disco import ServiceDiscovery
from tigasepy.extensions.service_admin import ADMIN
from tigasepy.extensions.vcard import VCardTemp
from tigasepy.interfaces import IExtension
from tigasepy.storage.interfaces import IAccountStore, IRosterStore, IVCardStore, RosterItem
from tigasepy.storage.memory import MemoryVCardStore
from tigasepy.xmpp import namespaces as ns

ADMIN_JID = "admin@example.org"
ALICE = "alice@example.org"
BOB = "bob@example.org"
NODES = [f"{ADMIN}#{name}" for name in ("add-user", "delete-user", "end-user-session", "change-user-password",
                                         "get-online-users-num", "get-online-users-list", "announce")]
NODES.append("urn:tigasepy:admin#reload-configuration")


@pytest.fixture
def stores():
    stores = make_stores(("admin", "alice", "bob"))
    stores[IVCardStore] = MemoryVCardStore()
    return stores


@pytest.fixture
def world(stores):
    world = make_world(stores)
    world.sm.config = Config(server=ServerConfig(domains=("example.org",), admins=("Admin@Example.org",)))
    world.sm.load_extension(ServiceDiscovery, None)
    world.sm.load_extension(VCardTemp, None)
    world.sm.load_extension(AdhocCommands, AdhocConfig(session_timeout_s=60, max_sessions_per_user=2))
    return world


@pytest.fixture
def admin(world):
    return world.connect(f"{ADMIN_JID}/console")


def command(world, session, node, action=None, sessionid=None, form="", iq_id="c"):
    attrs = f" node='{node}'"
    if action:
        attrs += f" action='{action}'"
    if sessionid:
        attrs += f" sessionid='{sessionid}'"
    return iq(world, session, "set", f"<command xmlns='{COMMANDS}'{attrs}>{form}</command>", iq_id=iq_id,
              to="example.org")


def submit(fields: dict, form_type: str | None = ADMIN, kind: str = "submit") -> str:
    out = f"<x xmlns='jabber:x:data' type='{kind}'>"
    if form_type:
        out += f"<field var='FORM_TYPE' type='hidden'><value>{form_type}</value></field>"
    for var, values in fields.items():
        values = values if isinstance(values, list) else [values]
        out += f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values) + "</field>"
    return out + "</x>"


def cmd(reply: domish.Element) -> domish.Element:
    return next(reply.elements(COMMANDS, "command"))


def form_fields(element: domish.Element) -> dict[str, list[str]]:
    form = next(element.elements(ns.DATA_FORMS, "x"))
    return {f["var"]: [str(v) for v in f.elements(ns.DATA_FORMS, "value")]
            for f in form.elements(ns.DATA_FORMS, "field")}


def app_condition(reply: domish.Element) -> str | None:
    error = next(reply.elements(None, "error"))
    for child in error.elements():
        if child.uri == COMMANDS:
            return child.name
    return None


def notes(element: domish.Element) -> list[tuple[str, str]]:
    return [(n["type"], str(n)) for n in element.elements(COMMANDS, "note")]


def run(world, session, node, fields, form_type=ADMIN):
    """Execute ``node`` and submit ``fields``; returns the final reply."""
    started = cmd(command(world, session, node, iq_id="start"))
    assert started["status"] == "executing"
    return command(world, session, node, "complete", started["sessionid"], submit(fields, form_type), iq_id="end")


def exists(stores, jid):
    return stores[IAccountStore].exists(jid).result


# -- framework, disco --------------------------------------------------------------------

def test_adhoc_is_builtin_and_provides_iextension(world):
    assert BUILTIN["adhoc"][1] and load_class(BUILTIN["adhoc"][0]) is AdhocCommands
    assert verifyObject(IExtension, world.sm.extensions["adhoc"][0])


def test_server_advertises_commands(world, admin):
    reply = iq(world, admin, "get", f"<query xmlns='{ns.DISCO_INFO}'/>", to="example.org")
    assert COMMANDS in {f["var"] for f in reply.firstChildElement().elements(ns.DISCO_INFO, "feature")}
    info = iq(world, admin, "get", f"<query xmlns='{ns.DISCO_INFO}' node='{COMMANDS}'/>", to="example.org",
              iq_id="n").firstChildElement()
    [identity] = info.elements(ns.DISCO_INFO, "identity")
    assert (identity["category"], identity["type"]) == ("automation", "command-list")


def test_admin_sees_every_command_and_others_none(world, admin):
    reply = iq(world, admin, "get", f"<query xmlns='{ns.DISCO_ITEMS}' node='{COMMANDS}'/>", to="example.org")
    query = reply.firstChildElement()
    assert query["node"] == COMMANDS
    items = list(query.elements(ns.DISCO_ITEMS, "item"))
    assert sorted(i["node"] for i in items) == sorted(NODES)
    assert all(i["jid"] == "example.org" and i["name"] for i in items)
    alice = world.connect(f"{ALICE}/a")
    reply = iq(world, alice, "get", f"<query xmlns='{ns.DISCO_ITEMS}' node='{COMMANDS}'/>", to="example.org")
    assert list(reply.firstChildElement().elements()) == []


def test_command_node_info_for_admins_only(world, admin):
    node = NODES[0]
    info = iq(world, admin, "get", f"<query xmlns='{ns.DISCO_INFO}' node='{node}'/>", to="example.org")
    query = info.firstChildElement()
    [identity] = query.elements(ns.DISCO_INFO, "identity")
    assert (identity["category"], identity["type"]) == ("automation", "command-node")
    assert {f["var"] for f in query.elements(ns.DISCO_INFO, "feature")} == {COMMANDS, ns.DATA_FORMS}
    alice = world.connect(f"{ALICE}/a")
    reply = iq(world, alice, "get", f"<query xmlns='{ns.DISCO_INFO}' node='{node}'/>", to="example.org")
    assert condition(reply) == "forbidden"


def test_non_admin_is_forbidden_and_nothing_happens(world, stores):
    alice = world.connect(f"{ALICE}/a")
    reply = command(world, alice, f"{ADMIN}#add-user")
    assert condition(reply) == "forbidden"
    assert next(reply.elements(None, "error"))["type"] == "cancel"
    reply = command(world, alice, f"{ADMIN}#delete-user", "complete", "made-up",
                    submit({"accountjids": BOB}), iq_id="d")
    assert condition(reply) == "forbidden"
    assert exists(stores, BOB)


def test_a_stanza_from_the_router_is_not_trusted_even_with_an_admin_jid(world):
    target = world.connect(f"{ADMIN_JID}/spoofed")
    stanza = domish.Element((None, "iq"))
    stanza["type"] = "set"
    stanza["id"] = "r"
    stanza["from"] = f"{ADMIN_JID}/spoofed"
    stanza["to"] = "example.org"
    stanza.addElement((COMMANDS, "command"))["node"] = NODES[0]
    world.sm.deliver(stanza)
    [reply] = target.take()
    assert condition(reply) == "forbidden"


def test_unknown_command_is_item_not_found(world, admin):
    assert condition(command(world, admin, f"{ADMIN}#no-such-thing")) == "item-not-found"


def test_unknown_action_is_malformed_action(world, admin):
    reply = command(world, admin, NODES[0], action="jump")
    assert (condition(reply), app_condition(reply)) == ("bad-request", "malformed-action")


def test_continuing_without_a_session_is_bad_sessionid(world, admin):
    reply = command(world, admin, NODES[0], action="complete")
    assert (condition(reply), app_condition(reply)) == ("bad-request", "bad-sessionid")
    reply = command(world, admin, NODES[0], action="complete", sessionid="nope", iq_id="c2")
    assert (condition(reply), app_condition(reply)) == ("bad-request", "bad-sessionid")


def test_execute_returns_a_form_with_a_session_and_actions(world, admin):
    reply = cmd(command(world, admin, NODES[0]))
    assert reply["status"] == "executing" and reply["node"] == NODES[0] and reply["sessionid"]
    actions = next(reply.elements(COMMANDS, "actions"))
    assert actions["execute"] == "complete" and [a.name for a in actions.elements()] == ["complete"]
    form = next(reply.elements(ns.DATA_FORMS, "x"))
    assert form["type"] == "form"
    fields = {f["var"]: f for f in form.elements(ns.DATA_FORMS, "field")}
    assert str(next(fields["FORM_TYPE"].elements())) == ADMIN
    assert fields["accountjid"]["type"] == "jid-single"
    assert next(fields["accountjid"].elements(ns.DATA_FORMS, "required"), None) is not None


# -- add user and bad forms --------------------------------------------------------------

def test_admin_adds_a_user(world, admin, stores):
    reply = run(world, admin, NODES[0], {"accountjid": "dave@example.org", "password": "dave-pw",
                                         "password-verify": "dave-pw"})
    done = cmd(reply)
    assert done["status"] == "completed"
    assert notes(done) == [("info", "Added dave@example.org")]
    assert exists(stores, "dave@example.org")
    assert stores[IAccountStore].get_credential("dave@example.org", "SHA-256").result is not None


def test_adding_an_existing_user_is_a_conflict(world, admin):
    assert condition(run(world, admin, NODES[0], {"accountjid": ALICE, "password": "x"})) == "conflict"


@pytest.mark.parametrize("fields,form_type,kind", [
    ({"password": "pw"}, ADMIN, "submit"),                                   # required field missing
    ({"accountjid": "", "password": "pw"}, ADMIN, "submit"),                 # required field empty
    ({"accountjid": "not a jid@@", "password": "pw"}, ADMIN, "submit"),      # not a JID
    ({"accountjid": "example.org", "password": "pw"}, ADMIN, "submit"),      # no localpart
    ({"accountjid": "dave@elsewhere.net", "password": "pw"}, ADMIN, "submit"),  # domain not hosted
    ({"accountjid": ["dave@example.org", "eve@example.org"], "password": "pw"}, ADMIN, "submit"),
    ({"accountjid": "dave@example.org", "password": "pw", "password-verify": "other"}, ADMIN, "submit"),
    ({"accountjid": "dave@example.org", "password": "pw"}, "urn:other:form", "submit"),
    ({"accountjid": "dave@example.org", "password": "pw"}, ADMIN, "form"),
])
def test_malformed_forms_are_bad_payload_and_change_nothing(world, admin, stores, fields, form_type, kind):
    started = cmd(command(world, admin, NODES[0], iq_id="start"))
    reply = command(world, admin, NODES[0], "complete", started["sessionid"], submit(fields, form_type, kind))
    assert (condition(reply), app_condition(reply)) == ("bad-request", "bad-payload")
    assert not exists(stores, "dave@example.org")
    # the session stays open for a corrected form
    fixed = command(world, admin, NODES[0], "complete", started["sessionid"],
                    submit({"accountjid": "dave@example.org", "password": "pw"}), iq_id="fix")
    assert cmd(fixed)["status"] == "completed" and exists(stores, "dave@example.org")


def test_submitting_without_a_form_is_bad_payload(world, admin):
    started = cmd(command(world, admin, NODES[0], iq_id="start"))
    reply = command(world, admin, NODES[0], "complete", started["sessionid"])
    assert (condition(reply), app_condition(reply)) == ("bad-request", "bad-payload")


def test_a_malformed_data_form_is_bad_payload(world, admin):
    started = cmd(command(world, admin, NODES[0], iq_id="start"))
    duplicate = ("<x xmlns='jabber:x:data' type='submit'><field var='accountjid'><value>a@example.org</value>"
                 "</field><field var='accountjid'><value>b@example.org</value></field></x>")
    reply = command(world, admin, NODES[0], "complete", started["sessionid"], duplicate)
    assert (condition(reply), app_condition(reply)) == ("bad-request", "bad-payload")


@pytest.mark.parametrize("action", ["next", "execute", "complete"])
def test_next_execute_and_complete_all_submit_a_single_stage_form(world, admin, stores, action):
    started = cmd(command(world, admin, NODES[0], iq_id="start"))
    reply = command(world, admin, NODES[0], action, started["sessionid"],
                    submit({"accountjid": "dave@example.org", "password": "pw"}))
    assert cmd(reply)["status"] == "completed" and exists(stores, "dave@example.org")


def test_prev_is_a_bad_action(world, admin):
    started = cmd(command(world, admin, NODES[0], iq_id="start"))
    reply = command(world, admin, NODES[0], "prev", started["sessionid"])
    assert (condition(reply), app_condition(reply)) == ("bad-request", "bad-action")


def test_cancel_ends_the_session(world, admin, stores):
    started = cmd(command(world, admin, NODES[0], iq_id="start"))
    canceled = cmd(command(world, admin, NODES[0], "cancel", started["sessionid"]))
    assert (canceled["status"], canceled["sessionid"]) == ("canceled", started["sessionid"])
    reply = command(world, admin, NODES[0], "complete", started["sessionid"],
                    submit({"accountjid": "dave@example.org", "password": "pw"}), iq_id="late")
    assert (condition(reply), app_condition(reply)) == ("not-allowed", "session-expired")
    assert not exists(stores, "dave@example.org")


def test_a_completed_session_cannot_be_reused(world, admin):
    started = cmd(command(world, admin, NODES[0], iq_id="start"))
    command(world, admin, NODES[0], "complete", started["sessionid"],
            submit({"accountjid": "dave@example.org", "password": "pw"}))
    again = command(world, admin, NODES[0], "complete", started["sessionid"],
                    submit({"accountjid": "erin@example.org", "password": "pw"}), iq_id="again")
    assert app_condition(again) == "session-expired"


def test_sessions_expire(world, admin):
    started = cmd(command(world, admin, NODES[0], iq_id="start"))
    world.clock.advance(61)
    reply = command(world, admin, NODES[0], "complete", started["sessionid"],
                    submit({"accountjid": "dave@example.org", "password": "pw"}))
    assert app_condition(reply) == "session-expired"


def test_a_session_belongs_to_the_resource_that_started_it(world, admin, stores):
    started = cmd(command(world, admin, NODES[0], iq_id="start"))
    other = world.connect(f"{ADMIN_JID}/other")
    reply = command(world, other, NODES[0], "complete", started["sessionid"],
                    submit({"accountjid": "dave@example.org", "password": "pw"}))
    assert app_condition(reply) == "bad-sessionid"
    assert not exists(stores, "dave@example.org")


def test_sessions_per_user_are_limited(world, admin):
    command(world, admin, NODES[0], iq_id="s1")
    command(world, admin, NODES[1], iq_id="s2")
    assert condition(command(world, admin, NODES[0], iq_id="s3")) == "not-allowed"
    # a command that completes at once needs no session slot kept, but the limit applies to starting
    other = world.connect(f"{ADMIN_JID}/other")
    assert condition(command(world, other, NODES[4], iq_id="s4")) == "not-allowed"


def test_unloading_cancels_session_timers(world, admin):
    command(world, admin, NODES[0])
    world.sm.unload_extension("adhoc")
    assert world.clock.getDelayedCalls() == []


# -- the other commands ------------------------------------------------------------------

def test_delete_user_removes_the_account_its_data_and_sessions(world, admin, stores):
    put(stores, ALICE, RosterItem(BOB, subscription="both"))
    alice = login(world, f"{ALICE}/a")
    iq(world, alice, "set", "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>")
    reply = run(world, admin, NODES[1], {"accountjids": [ALICE, "ghost@example.org"]})
    done = cmd(reply)
    assert done["status"] == "completed"
    assert notes(done) == [("info", f"Deleted {ALICE}"), ("error", "No account ghost@example.org")]
    assert not exists(stores, ALICE)
    assert stores[IRosterStore].get_items(ALICE).result == []
    assert stores[IVCardStore].get(ALICE).result is None
    assert alice.closed == ("not-authorized", "The account was removed")


def test_change_user_password(world, admin, stores):
    before = stores[IAccountStore].get_credential(BOB, "SHA-256").result
    done = cmd(run(world, admin, NODES[3], {"accountjid": BOB, "password": "new-bob-pw"}))
    assert done["status"] == "completed"
    assert stores[IAccountStore].get_credential(BOB, "SHA-256").result != before
    reply = run(world, admin, NODES[3], {"accountjid": "ghost@example.org", "password": "x"})
    assert condition(reply) == "item-not-found"


def test_online_users_number_and_list(world, admin):
    world.connect(f"{ALICE}/a")
    world.connect(f"{ALICE}/b")
    world.connect(f"{BOB}/b")
    done = cmd(command(world, admin, NODES[4]))
    assert done["status"] == "completed" and done["sessionid"]
    assert form_fields(done)["onlineusersnum"] == ["3"]
    listed = cmd(run(world, admin, NODES[5], {"max_items": "none"}))
    assert form_fields(listed)["onlineuserjids"] == [ADMIN_JID, ALICE, BOB]
    limited = cmd(run(world, admin, NODES[5], {"max_items": "25"}))
    assert form_fields(limited)["onlineuserjids"] == [ADMIN_JID, ALICE, BOB]
    reply = run(world, admin, NODES[5], {"max_items": "7"})
    assert app_condition(reply) == "bad-payload"


def test_end_user_session(world, admin):
    first = world.connect(f"{ALICE}/a")
    second = world.connect(f"{ALICE}/b")
    bob = world.connect(f"{BOB}/b")
    done = cmd(run(world, admin, NODES[2], {"accountjids": [ALICE, f"{BOB}/b"]}))
    assert notes(done) == [("info", f"Ended 2 session(s) of {ALICE}"), ("info", f"Ended 1 session(s) of {BOB}/b")]
    for session in (first, second, bob):
        assert session.closed[0] == "policy-violation"


def test_announce_reaches_every_session(world, admin):
    sessions = [world.connect(f"{ALICE}/a"), world.connect(f"{ALICE}/b"), world.connect(f"{BOB}/b")]
    done = cmd(run(world, admin, NODES[6], {"announcement": ["Maintenance at noon.", "Sorry!"]}))
    assert notes(done) == [("info", "Sent to 4 session(s)")]
    for session in sessions:
        [message] = session.take()
        assert (message["type"], message["from"]) == ("headline", "example.org")
        assert str(next(message.elements(None, "body"))) == "Maintenance at noon.\nSorry!"


def test_is_admin_compares_prepared_bare_jids():
    admins = ("Admin@Example.org", "not a jid@@", "example.org")
    assert is_admin(admins, "admin@example.org/res")
    assert not is_admin(admins, "example.org")
    assert not is_admin(admins, "other@example.org")
    assert not is_admin((), ADMIN_JID)
