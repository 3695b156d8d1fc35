"""The help desk example component: queue, positions, assignment and relay, commands; the same
scenarios with the component in-process and over XEP-0114 (piped into the accept side)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.words.xish import domish

from support.component_harness import SECRET, AcceptWorld, PipeEndpoint
from tigasepy.components import components_plan
from tigasepy.components.connector import ComponentConnector
from tigasepy.config import ConfigError
from tigasepy.stream.parser import parse_stanza
from tigasepy.xmpp.errors import error_condition

from examples.helpdesk_component import HelpDesk, HelpDeskConfig

DOMAIN = "helpdesk.example.org"
DESK = f"support@{DOMAIN}"
AGENTS = ("agent1@example.org", "agent2@example.org")


class Desk:
    """A router with example.org users (recorded) and the help desk, in-process or external."""

    def __init__(self, mode: str, agents: tuple[str, ...] = AGENTS, **options: Any) -> None:
        self.world = AcceptWorld(domains=(DOMAIN,) if mode == "xep-0114" else ())
        self.component = HelpDesk(DOMAIN, HelpDeskConfig(agents=agents, **options))
        self._pump = lambda: None
        if mode == "in-process":
            self.component.attach(self.world.router)
        else:
            endpoint = PipeEndpoint(self.world)
            self.connector = ComponentConnector(self.component, endpoint, SECRET, self.world.clock, jitter=False)
            self.connector.startService()
            assert self.connector.connected
            self._pump = endpoint.pump

    def send(self, frm: str, to: str, body: str) -> None:
        stanza = domish.Element((None, "message"))
        stanza["from"], stanza["to"], stanza["type"] = frm, to, "chat"
        stanza.addElement("body", content=body)
        self.world.router.route(stanza)
        self._pump()

    def route(self, xml: str) -> None:
        self.world.router.route(parse_stanza(xml))
        self._pump()

    def inbox(self) -> list[tuple[str, str, str]]:
        """(to, from, body) of everything users received since the last call."""
        return [(m["to"], m["from"], str(m.body) if m.body is not None else "")
                for m in self.world.local.take()]

    def to(self, jid: str, inbox: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
        return [(frm, body) for to, frm, body in inbox if to.split("/")[0] == jid.split("/")[0]]


@pytest.fixture(params=["in-process", "xep-0114"])
def desk(request) -> Desk:
    return Desk(request.param)


def test_visitors_queue_get_positions_and_are_relayed_to_agents(desk):
    desk.send("v1@example.org/web", DESK, "my printer is on fire")
    desk.send("v2@example.org/web", DESK, "hello?")
    got = desk.inbox()
    assert "number 1 in the queue" in desk.to("v1@example.org", got)[0][1]
    assert "number 2 in the queue" in desk.to("v2@example.org", got)[0][1]
    assert all(frm == DESK for _to, frm, _b in got)

    desk.send("v2@example.org/web", DESK, "still there?")
    [(frm, text)] = desk.to("v2@example.org", desk.inbox())
    assert "number 2 in the queue" in text

    desk.send("agent1@example.org/desk", DESK, "!ready")
    got = desk.inbox()
    agent = desk.to("agent1@example.org", got)
    ticket = agent[0][0]
    assert ticket.startswith("ticket-") and ticket.endswith("@" + DOMAIN)
    assert "v1@example.org" in agent[0][1]
    assert agent[1] == (ticket, "my printer is on fire")
    assert desk.to("v1@example.org", got) == [(DESK, "An agent is with you now.")]
    assert desk.to("v2@example.org", got) == [(DESK, "You are now number 1 in the queue.")]

    desk.send("agent1@example.org/desk", ticket, "Unplug it, please.")
    assert desk.inbox() == [("v1@example.org/web", DESK, "Unplug it, please.")]
    desk.send("v1@example.org/web", DESK, "done, thanks")
    assert desk.inbox() == [("agent1@example.org/desk", ticket, "done, thanks")]

    desk.send("agent1@example.org/desk", DESK, "!done")
    got = desk.inbox()
    assert "closed this conversation" in desk.to("v1@example.org", got)[0][1]
    agent = desk.to("agent1@example.org", got)
    second = agent[1][0]
    assert second != ticket and "v2@example.org" in agent[1][1]
    assert [body for frm, body in agent[2:]] == ["hello?", "still there?"]
    assert desk.to("v2@example.org", got) == [(DESK, "An agent is with you now.")]

    # the old ticket is closed: v1 writing again opens a new one
    desk.send("agent1@example.org/desk", ticket, "anything else?")
    assert "closed" in desk.inbox()[0][2]


def test_a_free_agent_gets_a_new_visitor_at_once(desk):
    desk.send("agent2@example.org/x", DESK, "!ready")
    assert "No visitors are waiting" in desk.inbox()[0][2]
    desk.send("v@example.org/r", DESK, "hi")
    got = desk.inbox()
    assert "An agent is with you now" in desk.to("v@example.org", got)[0][1]
    assert [body for _frm, body in desk.to("agent2@example.org", got)][1:] == ["hi"]


def test_only_the_assigned_agent_may_write_to_a_ticket(desk):
    desk.send("agent1@example.org/d", DESK, "!ready")
    desk.send("v@example.org/r", DESK, "hi")
    [ticket] = {frm for frm, _b in desk.to("agent1@example.org", desk.inbox()) if frm.startswith("ticket-")}
    # another agent
    desk.send("agent2@example.org/d", ticket, "let me in")
    assert "not yours" in desk.inbox()[0][2]
    # a visitor (not an agent) gets forbidden
    desk.route(f"<message from='mallory@example.org/m' to='{ticket}' id='x'><body>hijack</body></message>")
    [error] = desk.world.local.take()
    assert error_condition(error) == "forbidden"
    assert desk.inbox() == []


def test_other_addresses_of_the_domain_are_not_found(desk):
    desk.route(f"<message from='v@example.org/r' to='nobody@{DOMAIN}' id='x'><body>hi</body></message>")
    [error] = desk.world.local.take()
    assert error_condition(error) == "item-not-found"


def test_a_waiting_visitor_who_leaves_moves_the_queue(desk):
    for n in (1, 2, 3):
        desk.send(f"v{n}@example.org/r", DESK, "help")
    desk.inbox()
    desk.send("v1@example.org/r", DESK, "!bye")
    got = desk.inbox()
    assert desk.to("v1@example.org", got) == [(DESK, "Goodbye!")]
    assert desk.to("v2@example.org", got) == [(DESK, "You are now number 1 in the queue.")]
    assert desk.to("v3@example.org", got) == [(DESK, "You are now number 2 in the queue.")]


def test_an_agent_going_offline_puts_their_visitor_first_in_line(desk):
    desk.send("agent1@example.org/d", DESK, "!ready")
    desk.send("v1@example.org/r", DESK, "first")
    desk.send("v2@example.org/r", DESK, "second")
    desk.inbox()
    desk.route(f"<presence from='agent1@example.org/d' to='{DESK}' type='unavailable'/>")
    got = desk.inbox()
    assert desk.to("v1@example.org", got) == [(DESK, "Your agent had to leave."),
                                              (DESK, "You are now number 1 in the queue.")]
    desk.send("agent2@example.org/d", DESK, "!next")
    got = desk.inbox()
    assert "v1@example.org" in desk.to("agent2@example.org", got)[0][1]


def test_agent_commands(desk):
    desk.send("agent1@example.org/d", DESK, "!done")
    assert "no open conversation" in desk.inbox()[0][2]
    desk.send("agent1@example.org/d", DESK, "what?")
    assert "!ready" in desk.inbox()[0][2]
    desk.send("agent1@example.org/d", DESK, "!ready")
    desk.send("v@example.org/r", DESK, "hi")
    desk.inbox()
    desk.send("agent1@example.org/d", DESK, "!away")
    assert "send !done first" in desk.inbox()[0][2]
    desk.send("agent1@example.org/d", DESK, "!status")
    assert desk.inbox()[0][2].startswith("0 waiting; 0 agents free, 1 busy; you: ticket")
    desk.send("agent1@example.org/d", DESK, "!done")
    desk.send("agent1@example.org/d", DESK, "!away")
    assert desk.inbox()[-1][2] == "You will get no new visitors."
    desk.send("v2@example.org/r", DESK, "anyone?")
    assert "number 1 in the queue" in desk.inbox()[0][2]


def test_a_full_queue_turns_visitors_away(desk):
    desk = Desk("in-process", max_queue=1)
    desk.send("v1@example.org/r", DESK, "a")
    desk.send("v2@example.org/r", DESK, "b")
    assert "very busy" in desk.to("v2@example.org", desk.inbox())[0][1]


def test_subscription_to_the_desk_is_approved(desk):
    desk.route(f"<presence from='v@example.org' to='{DESK}' type='subscribe'/>")
    answers = desk.world.local.take()
    assert [(p.name, p.getAttribute("type"), p["from"]) for p in answers] == [
        ("presence", "subscribed", DESK), ("presence", None, DESK)]


def test_config_is_checked():
    with pytest.raises(ConfigError, match="agents"):
        components_plan({"hd": {"class": "examples.helpdesk_component:HelpDesk", "domain": DOMAIN}})
    with pytest.raises(ConfigError, match="bare JID"):
        components_plan({"hd": {"class": "examples.helpdesk_component:HelpDesk", "domain": DOMAIN,
                                "agents": ["a@example.org/res"]}})
    plan = components_plan({"hd": {"class": "examples.helpdesk_component:HelpDesk", "domain": DOMAIN,
                                   "agents": list(AGENTS), "desk": "help"}})
    [(cls, domain, config)] = plan.local
    assert cls is HelpDesk and config.desk == "help" and config.agents == AGENTS
