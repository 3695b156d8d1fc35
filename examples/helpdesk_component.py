"""An example component: a help desk where a queue of visitors is answered by agents.

Visitors write to ``support@helpdesk.example.org``. Each visitor gets a ticket; a free
agent takes it at once, otherwise the visitor waits in a queue and is told their
position (again whenever it changes, and whenever they write while waiting).

Agents are configured bare JIDs. They talk to the desk with commands sent to
``support@...``:

- ``!ready`` (or ``!next``): take visitors (the next waiting one at once, if any);
- ``!done``: close the current conversation and take the next visitor;
- ``!away``: take no more visitors (after ``!done``);
- ``!status``: the queue length and the agents' states;
- anything else: this help.

While an agent handles a ticket, the visitor's messages reach the agent from the ticket's
own address (``ticket-7@helpdesk.example.org``) and what the agent writes to that address
reaches the visitor from ``support@...``: neither sees the other's JID unless the agent
is told (the agent is, in the ticket's first message). A visitor ends with ``!bye``.

Enable it in-process in ``tigasepy.toml``::

    [components.helpdesk]
    class = "examples.helpdesk_component:HelpDesk"
    domain = "helpdesk.example.org"
    agents = ["alice@example.org", "bob@example.org"]

or run the same class as an external component (XEP-0114) of any server::

    python -m tigasepy.components.connector --class examples.helpdesk_component:HelpDesk \\
        --domain helpdesk.example.org --port 5347 --secret-file helpdesk.secret \\
        --options helpdesk.toml        # holds: agents = ["alice@example.org"]

All state is in memory: a restart forgets the queue.
"""

from __future__ import annotations

import collections
import itertools
import re
from dataclasses import dataclass, field

from twisted.words.xish import domish

from tigasepy.components.base import Component
from tigasepy.config import ConfigError
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.jid import InvalidFormat, parse_jid

_TICKET = re.compile(r"ticket-(\d{1,9})")

HELP = ("Agent commands (send them to {desk}): !ready (take visitors), !done (close the current "
        "conversation and take the next one), !away (take no new visitors), !status. "
        "Answer a visitor by writing to the ticket address their messages come from.")


@dataclass(frozen=True)
class HelpDeskConfig:
    """``[components.helpdesk]`` options."""

    agents: tuple[str, ...] = ()
    desk: str = "support"
    max_queue: int = 100
    max_waiting_messages: int = 20
    welcome: str = "Welcome to the help desk."

    def validate(self, path: tuple[str, ...]) -> None:
        if not self.agents:
            raise ConfigError("needs at least one agent (a bare JID)", path + ("agents",))
        for agent in self.agents:
            try:
                jid = parse_jid(agent)
            except InvalidFormat:
                jid = None
            if jid is None or jid.user is None or jid.resource is not None:
                raise ConfigError(f"{agent!r} is not a bare JID (user@domain)", path + ("agents",))
        if not self.desk or not self.desk.isalnum():
            raise ConfigError("must be a simple localpart (letters and digits)", path + ("desk",))
        if self.max_queue < 1:
            raise ConfigError("must be >= 1", path + ("max_queue",))
        if self.max_waiting_messages < 1:
            raise ConfigError("must be >= 1", path + ("max_waiting_messages",))


@dataclass
class Ticket:
    """One visitor's conversation."""

    number: int
    visitor: str                 # the full JID the visitor last wrote from
    waiting: list[str] = field(default_factory=list)   # messages not yet seen by an agent
    agent: str | None = None     # the agent's bare JID once assigned


@dataclass
class Agent:
    jid: str                     # the configured bare JID
    address: str = ""            # the full JID the agent last wrote from (where to write)
    ready: bool = False
    ticket: Ticket | None = None

    def __post_init__(self) -> None:
        self.address = self.address or self.jid


class HelpDesk(Component):
    """Queues visitors of ``support@<domain>`` and relays them to free agents."""

    config_type = HelpDeskConfig

    def __init__(self, domain: str, config: HelpDeskConfig | None = None) -> None:
        super().__init__(domain, config or HelpDeskConfig(agents=()))
        self.desk = f"{self.config.desk}@{domain}"
        self.agents = {parse_jid(a).userhost(): Agent(parse_jid(a).userhost()) for a in self.config.agents}
        self.queue: collections.deque[Ticket] = collections.deque()
        self.tickets: dict[int, Ticket] = {}
        self.by_visitor: dict[str, Ticket] = {}
        self._numbers = itertools.count(1)

    # -- addresses ------------------------------------------------------------------------
    def ticket_address(self, ticket: Ticket) -> str:
        return f"ticket-{ticket.number}@{self.domain}"

    def say(self, to: str, text: str, frm: str | None = None) -> None:
        """Send a chat message from the desk (or ``frm``) to ``to``."""
        message = domish.Element((None, "message"))
        message["to"] = to
        message["from"] = frm or self.desk
        message["type"] = "chat"
        message.addElement("body", content=text)
        self.send(message)

    # -- stanzas --------------------------------------------------------------------------
    def on_message(self, stanza: domish.Element) -> None:
        if stanza.getAttribute("type") in ("error", "groupchat", "headline") or stanza.body is None:
            return
        sender = parse_jid(stanza["from"])
        recipient = parse_jid(stanza["to"])
        body = str(stanza.body).strip()
        if not body:
            return
        bare = sender.userhost()
        if bare in self.agents:
            self.agents[bare].address = sender.full()
        if recipient.user is None or recipient.user == self.config.desk:
            if bare in self.agents:
                self.agent_command(self.agents[bare], body)
            else:
                self.from_visitor(sender.full(), bare, body)
            return
        match = _TICKET.fullmatch(recipient.user)
        if match is None:
            raise StanzaError("item-not-found", f"Write to {self.desk}")
        agent = self.agents.get(bare)
        if agent is None:
            raise StanzaError("forbidden", "Only agents write to ticket addresses")
        ticket = self.tickets.get(int(match.group(1)))
        if ticket is None or ticket.agent != agent.jid:
            self.say(agent.address, "This conversation is closed or is not yours.", frm=stanza["to"])
            return
        if body == "!done":
            self.agent_command(agent, body)
            return
        self.say(ticket.visitor, body)

    def on_presence(self, stanza: domish.Element) -> None:
        kind = stanza.getAttribute("type")
        sender = parse_jid(stanza["from"])
        bare = sender.userhost()
        if kind == "subscribe":
            for answer in ("subscribed", None):
                self._presence(stanza["from"], answer, stanza["to"])
        elif kind == "probe":
            self._presence(stanza["from"], None, stanza["to"])
        elif kind == "unavailable":
            if bare in self.agents:
                self.agent_left(self.agents[bare])
            elif bare in self.by_visitor and self.by_visitor[bare].visitor == sender.full():
                self.close_ticket(self.by_visitor[bare], "The visitor left.")

    def _presence(self, to: str, kind: str | None, frm: str) -> None:
        presence = domish.Element((None, "presence"))
        presence["to"] = to
        presence["from"] = parse_jid(frm).userhost()
        if kind:
            presence["type"] = kind
        self.send(presence)

    # -- visitors -------------------------------------------------------------------------
    def from_visitor(self, full: str, bare: str, body: str) -> None:
        ticket = self.by_visitor.get(bare)
        if body.lower() in ("!bye", "!quit"):
            if ticket is not None:
                self.close_ticket(ticket, "The visitor ended the conversation.")
            self.say(full, "Goodbye!")
            return
        if ticket is not None:
            ticket.visitor = full
            if ticket.agent is not None:
                self.say(self.agents[ticket.agent].address, body, frm=self.ticket_address(ticket))
            elif len(ticket.waiting) >= self.config.max_waiting_messages:
                self.say(full, "Please wait for an agent before writing more.")
            else:
                ticket.waiting.append(body)
                self.say(full, f"You are number {self.position(ticket)} in the queue.")
            return
        if len(self.queue) >= self.config.max_queue:
            self.say(full, "The help desk is very busy; please try again later.")
            return
        ticket = Ticket(next(self._numbers), full, [body])
        self.tickets[ticket.number] = ticket
        self.by_visitor[bare] = ticket
        agent = self.free_agent()
        if agent is not None:
            self.say(full, f"{self.config.welcome} An agent is with you now.")
            self.assign(ticket, agent)
        else:
            self.queue.append(ticket)
            self.say(full, f"{self.config.welcome} All agents are busy; you are number "
                           f"{self.position(ticket)} in the queue.")

    def position(self, ticket: Ticket) -> int:
        """1-based place of a waiting ticket."""
        return self.queue.index(ticket) + 1

    def queue_moved(self) -> None:
        for place, ticket in enumerate(self.queue, 1):
            self.say(ticket.visitor, f"You are now number {place} in the queue.")

    # -- agents ---------------------------------------------------------------------------
    def free_agent(self) -> Agent | None:
        for agent in self.agents.values():
            if agent.ready and agent.ticket is None:
                return agent
        return None

    def assign(self, ticket: Ticket, agent: Agent) -> None:
        ticket.agent = agent.jid
        agent.ticket = ticket
        address = self.ticket_address(ticket)
        visitor = parse_jid(ticket.visitor).userhost()
        self.say(agent.address, f"New visitor {visitor} (ticket {ticket.number}). Answer by writing to "
                            f"{address}; send !done to {self.desk} when finished.", frm=address)
        waiting, ticket.waiting = ticket.waiting, []
        for body in waiting:
            self.say(agent.address, body, frm=address)

    def take_next(self, agent: Agent) -> None:
        """Give a ready, free agent the next waiting visitor (or say there is none)."""
        if not self.queue:
            self.say(agent.address, "No visitors are waiting; you will get the next one.")
            return
        ticket = self.queue.popleft()
        self.say(ticket.visitor, "An agent is with you now.")
        self.assign(ticket, agent)
        self.queue_moved()

    def close_ticket(self, ticket: Ticket, reason: str) -> None:
        self.tickets.pop(ticket.number, None)
        bare = parse_jid(ticket.visitor).userhost()
        if self.by_visitor.get(bare) is ticket:
            del self.by_visitor[bare]
        if ticket in self.queue:
            self.queue.remove(ticket)
            self.queue_moved()
            return
        agent = self.agents.get(ticket.agent or "")
        if agent is not None and agent.ticket is ticket:
            agent.ticket = None
            self.say(agent.address, f"Ticket {ticket.number} closed: {reason}", frm=self.ticket_address(ticket))
            if agent.ready:
                self.take_next(agent)

    def agent_left(self, agent: Agent) -> None:
        """An agent went offline: stop giving them visitors; their visitor waits first in line."""
        agent.ready = False
        ticket, agent.ticket = agent.ticket, None
        if ticket is not None:
            ticket.agent = None
            self.queue.appendleft(ticket)
            self.say(ticket.visitor, "Your agent had to leave.")
            other = self.free_agent()
            if other is not None:
                self.take_next(other)
            else:
                self.queue_moved()

    def agent_command(self, agent: Agent, body: str) -> None:
        command = body.split()[0].lower()
        if command in ("!ready", "!next"):
            if agent.ticket is not None:
                self.say(agent.address, f"You are still with ticket {agent.ticket.number}; send !done first.")
                return
            agent.ready = True
            self.take_next(agent)
        elif command == "!done":
            ticket = agent.ticket
            if ticket is None:
                self.say(agent.address, "You have no open conversation.")
                return
            self.say(ticket.visitor, "The agent closed this conversation. Thank you for contacting us!")
            agent.ready = True
            self.close_ticket(ticket, "done.")
        elif command == "!away":
            if agent.ticket is not None:
                self.say(agent.address, f"You are still with ticket {agent.ticket.number}; send !done first.")
                return
            agent.ready = False
            self.say(agent.address, "You will get no new visitors.")
        elif command == "!status":
            free = sum(1 for a in self.agents.values() if a.ready and a.ticket is None)
            busy = sum(1 for a in self.agents.values() if a.ticket is not None)
            mine = f"ticket {agent.ticket.number}" if agent.ticket else ("ready" if agent.ready else "away")
            self.say(agent.address, f"{len(self.queue)} waiting; {free} agents free, {busy} busy; you: {mine}.")
        else:
            self.say(agent.address, HELP.format(desk=self.desk))
