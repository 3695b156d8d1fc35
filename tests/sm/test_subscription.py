"""The subscription state machine against RFC 6121 appendix A, row by row, as pure functions."""

from __future__ import annotations

import pytest
from twisted.internet import defer

from tigasepy.sm.queue import OwnerQueue
from tigasepy.extensions.subscription import (
    inbound, item_element, outbound, presence, removal_notices, removed_element, state_name,
)
from tigasepy.storage.interfaces import RosterItem
from tigasepy.xmpp import namespaces as ns

CONTACT = "bob@example.net"

_STATES = {
    "None": ("none", False, False),
    "None + Pending Out": ("none", True, False),
    "None + Pending In": ("none", False, True),
    "None + Pending Out/In": ("none", True, True),
    "To": ("to", False, False),
    "To + Pending In": ("to", False, True),
    "From": ("from", False, False),
    "From + Pending Out": ("from", True, False),
    "Both": ("both", False, False),
}


def row(state: str, **changes) -> RosterItem:
    """A visible roster row in the appendix A state named ``state``."""
    subscription, ask, pending_in = _STATES[state]
    return RosterItem(contact=CONTACT, subscription=subscription, ask=ask, pending_in=pending_in, **changes)


# RFC 6121 A.2: (existing state, deliver?, new state), per inbound type.
INBOUND = {
    "subscribe": [
        ("None", True, "None + Pending In"),
        ("None + Pending Out", True, "None + Pending Out/In"),
        ("None + Pending In", False, "None + Pending In"),
        ("None + Pending Out/In", False, "None + Pending Out/In"),
        ("To", True, "To + Pending In"),
        ("To + Pending In", False, "To + Pending In"),
        ("From", False, "From"),
        ("From + Pending Out", False, "From + Pending Out"),
        ("Both", False, "Both"),
    ],
    "unsubscribe": [
        ("None", False, "None"),
        ("None + Pending Out", False, "None + Pending Out"),
        ("None + Pending In", True, "None"),
        ("None + Pending Out/In", True, "None + Pending Out"),
        ("To", False, "To"),
        ("To + Pending In", True, "To"),
        ("From", True, "None"),
        ("From + Pending Out", True, "None + Pending Out"),
        ("Both", True, "To"),
    ],
    "subscribed": [
        ("None", False, "None"),
        ("None + Pending Out", True, "To"),
        ("None + Pending In", False, "None + Pending In"),
        ("None + Pending Out/In", True, "To + Pending In"),
        ("To", False, "To"),
        ("To + Pending In", False, "To + Pending In"),
        ("From", False, "From"),
        ("From + Pending Out", True, "Both"),
        ("Both", False, "Both"),
    ],
    "unsubscribed": [
        ("None", False, "None"),
        ("None + Pending Out", True, "None"),
        ("None + Pending In", False, "None + Pending In"),
        ("None + Pending Out/In", True, "None + Pending In"),
        ("To", True, "None"),
        ("To + Pending In", True, "None + Pending In"),
        ("From", False, "From"),
        ("From + Pending Out", True, "From"),
        ("Both", True, "From"),
    ],
}

# RFC 6121 A.3: (existing state, route?, new state), per outbound type. "subscribe" and
# "unsubscribe" are always routed (a contact's server that lost state answers again);
# "subscribed" without a pending request is a pre-approval (tested separately).
OUTBOUND = {
    "subscribe": [
        ("None", True, "None + Pending Out"),
        ("None + Pending Out", True, "None + Pending Out"),
        ("None + Pending In", True, "None + Pending Out/In"),
        ("None + Pending Out/In", True, "None + Pending Out/In"),
        ("To", True, "To"),
        ("To + Pending In", True, "To + Pending In"),
        ("From", True, "From + Pending Out"),
        ("From + Pending Out", True, "From + Pending Out"),
        ("Both", True, "Both"),
    ],
    "unsubscribe": [
        ("None", True, "None"),
        ("None + Pending Out", True, "None"),
        ("None + Pending In", True, "None + Pending In"),
        ("None + Pending Out/In", True, "None + Pending In"),
        ("To", True, "None"),
        ("To + Pending In", True, "None + Pending In"),
        ("From", True, "From"),
        ("From + Pending Out", True, "From"),
        ("Both", True, "From"),
    ],
    "subscribed": [
        ("None + Pending In", True, "From"),
        ("None + Pending Out/In", True, "From + Pending Out"),
        ("To + Pending In", True, "Both"),
        ("From", False, "From"),
        ("From + Pending Out", False, "From + Pending Out"),
        ("Both", False, "Both"),
    ],
    "unsubscribed": [
        ("None", False, "None"),
        ("None + Pending Out", False, "None + Pending Out"),
        ("None + Pending In", True, "None"),
        ("None + Pending Out/In", True, "None + Pending Out"),
        ("To", False, "To"),
        ("To + Pending In", True, "To"),
        ("From", True, "None"),
        ("From + Pending Out", True, "None + Pending Out"),
        ("Both", True, "To"),
    ],
}


def _rows(table):
    return [pytest.param(kind, old, forward, new, id=f"{kind}:{old}")
            for kind, rows in table.items() for old, forward, new in rows]


@pytest.mark.parametrize("kind, old, deliver, new", _rows(INBOUND))
def test_inbound_subscription_stanza_follows_rfc6121_appendix_a2(kind, old, deliver, new):
    step = inbound(row(old), kind, CONTACT)
    assert (step.forward, state_name(step.after)) == (deliver, new)


@pytest.mark.parametrize("kind, old, route, new", _rows(OUTBOUND))
def test_outbound_subscription_stanza_follows_rfc6121_appendix_a3(kind, old, route, new):
    step = outbound(row(old), kind, CONTACT)
    assert (step.forward, state_name(step.after)) == (route, new)


@pytest.mark.parametrize("kind, old, deliver, new", _rows(INBOUND))
def test_inbound_pushes_exactly_when_the_visible_item_changes(kind, old, deliver, new):
    step = inbound(row(old), kind, CONTACT)
    visible_change = (_STATES[old][:2] != _STATES[new][:2])
    assert step.push == visible_change


@pytest.mark.parametrize("old", ["From", "From + Pending Out", "Both"])
def test_inbound_subscribe_from_a_subscribed_contact_is_answered_subscribed(old):
    step = inbound(row(old), "subscribe", CONTACT)
    assert (step.reply, step.share, step.changed, step.forward) == ("subscribed", "available", False, False)


def test_inbound_unsubscribe_from_a_subscriber_withdraws_presence():
    step = inbound(row("Both"), "unsubscribe", CONTACT)
    assert step.share == "unavailable"


def test_inbound_subscribe_from_a_stranger_keeps_a_hidden_pending_row():
    step = inbound(None, "subscribe", CONTACT)
    assert step.forward and not step.push
    assert step.after == RosterItem(contact=CONTACT, pending_in=True, in_roster=False)


@pytest.mark.parametrize("kind", ["unsubscribe", "subscribed", "unsubscribed"])
def test_inbound_non_request_from_a_stranger_keeps_no_row(kind):
    step = inbound(None, kind, CONTACT)
    assert (step.after, step.forward, step.changed) == (None, False, False)


def test_cancelled_request_from_a_stranger_drops_the_hidden_row():
    hidden = RosterItem(contact=CONTACT, pending_in=True, in_roster=False)
    step = inbound(hidden, "unsubscribe", CONTACT)
    assert (step.after, step.forward, step.push) == (None, True, False)


def test_denying_a_strangers_request_drops_the_hidden_row_and_routes():
    hidden = RosterItem(contact=CONTACT, pending_in=True, in_roster=False)
    step = outbound(hidden, "unsubscribed", CONTACT)
    assert (step.after, step.forward, step.push) == (None, True, False)


def test_approving_a_strangers_request_adds_the_contact_to_the_roster():
    hidden = RosterItem(contact=CONTACT, pending_in=True, in_roster=False)
    step = outbound(hidden, "subscribed", CONTACT)
    assert step.after == RosterItem(contact=CONTACT, subscription="from", in_roster=True)
    assert (step.forward, step.push, step.share) == (True, True, "available")


def test_outbound_subscribe_to_someone_new_creates_a_pushed_item_with_ask():
    step = outbound(None, "subscribe", CONTACT)
    assert step.after == RosterItem(contact=CONTACT, ask=True)
    assert step.forward and step.push


@pytest.mark.parametrize("old", ["None", "None + Pending Out", "To"])
def test_outbound_subscribed_without_a_request_is_a_pre_approval(old):
    step = outbound(row(old), "subscribed", CONTACT)
    assert step.after == row(old, approved=True)
    assert (step.forward, step.push) == (False, True)


def test_pre_approval_of_someone_not_in_the_roster_adds_them():
    step = outbound(None, "subscribed", CONTACT)
    assert step.after == RosterItem(contact=CONTACT, approved=True)
    assert step.push and not step.forward


def test_outbound_subscribed_without_a_request_is_ignored_when_pre_approval_is_off():
    step = outbound(row("None"), "subscribed", CONTACT, pre_approval=False)
    assert (step.changed, step.forward) == (False, False)


@pytest.mark.parametrize("old, new", [("None", "From"), ("To", "Both")])
def test_inbound_subscribe_after_pre_approval_is_approved_by_the_server(old, new):
    step = inbound(row(old, approved=True), "subscribe", CONTACT)
    assert state_name(step.after) == new and not step.after.approved
    assert (step.forward, step.reply, step.push, step.share) == (False, "subscribed", True, "available")


def test_outbound_unsubscribed_cancels_a_pre_approval_without_routing():
    step = outbound(row("None", approved=True), "unsubscribed", CONTACT)
    assert step.after == row("None")
    assert (step.forward, step.push) == (False, True)


@pytest.mark.parametrize("old", ["From", "Both"])
def test_outbound_unsubscribed_of_a_subscriber_withdraws_presence(old):
    assert outbound(row(old), "unsubscribed", CONTACT).share == "unavailable"


@pytest.mark.parametrize("old", ["None + Pending In", "To + Pending In"])
def test_outbound_subscribed_approving_a_request_shares_presence(old):
    assert outbound(row(old), "subscribed", CONTACT).share == "available"


def test_transitions_reject_types_that_are_not_about_subscriptions():
    with pytest.raises(ValueError):
        outbound(None, "probe", CONTACT)
    with pytest.raises(ValueError):
        inbound(None, "available", CONTACT)


@pytest.mark.parametrize("old, notices", [
    ("None", ()),
    ("None + Pending Out", ("unsubscribe",)),
    ("None + Pending In", ("unsubscribed",)),
    ("None + Pending Out/In", ("unsubscribe", "unsubscribed")),
    ("To", ("unsubscribe",)),
    ("From", ("unsubscribed",)),
    ("Both", ("unsubscribe", "unsubscribed")),
])
def test_removing_an_item_cancels_each_direction_that_exists(old, notices):
    assert removal_notices(row(old)) == notices


def test_state_names_match_the_rfc():
    assert [state_name(row(name)) for name in _STATES] == list(_STATES)
    assert state_name(None) == "None"


def test_item_element_shows_ask_and_approval_but_never_pending_in():
    item = RosterItem(contact=CONTACT, name="Bob", subscription="none", ask=True, pending_in=True,
                      approved=True, groups=("Friends", "Work"))
    element = item_element(item)
    assert (element.uri, element["jid"], element["name"], element["subscription"]) == (
        ns.ROSTER, CONTACT, "Bob", "none")
    assert (element.getAttribute("ask"), element.getAttribute("approved")) == ("subscribe", "true")
    assert [str(g) for g in element.elements(ns.ROSTER, "group")] == ["Friends", "Work"]
    assert "pending" not in element.toXml()


def test_removed_element_says_remove():
    element = removed_element(CONTACT)
    assert (element["jid"], element["subscription"]) == (CONTACT, "remove")


def test_presence_helper_leaves_available_untyped():
    assert presence(None, "a@x", "b@y").getAttribute("type") is None
    assert presence("available", "a@x", None).getAttribute("to") is None
    assert presence("probe", "a@x", "b@y")["type"] == "probe"


def test_owner_queue_runs_one_job_at_a_time_per_owner_and_forgets_idle_owners():
    queue = OwnerQueue()
    gate: defer.Deferred = defer.Deferred()
    order = []

    async def first():
        order.append("first-start")
        await gate
        order.append("first-end")

    async def second():
        order.append("second")

    async def other():
        order.append("other")

    d1 = queue.run("a", first)
    d2 = queue.run("a", second)
    d3 = queue.run("b", other)
    assert order == ["first-start", "other"]
    gate.callback(None)
    assert order == ["first-start", "other", "first-end", "second"]
    assert all(d.called for d in (d1, d2, d3))
    assert len(queue) == 0


def test_owner_queue_passes_failures_on_and_keeps_going():
    queue = OwnerQueue()

    async def boom():
        raise RuntimeError("x")

    async def fine():
        return 7

    failed = queue.run("a", boom)
    ok = queue.run("a", fine)
    failures = []
    failed.addErrback(failures.append)
    assert failures and failures[0].check(RuntimeError)
    assert ok.result == 7
