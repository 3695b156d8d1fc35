"""Ad-Hoc Commands (XEP-0050) on the server, with the Service Administration commands (XEP-0133).

Commands are listed in disco#items on the node ``http://jabber.org/protocol/commands``
(only those the requester may run) and run with IQ sets of ``<command/>`` to the
server's domain. A command runs in a session: ``execute`` starts one (the reply
carries a ``sessionid`` and, for a command that asks for input, a data form and
the allowed ``<actions/>``); the requester continues it with ``next``/``complete``
(or ``execute``) and a submitted form, or ends it with ``cancel``. A session
belongs to the full JID that started it, expires after ``session_timeout_s``, and
one account has at most ``max_sessions_per_user`` at a time.

Errors (XEP-0050 section 4.6): an unknown node is ``item-not-found``, a command the
requester may not run ``forbidden``, an unknown action ``bad-request`` +
``<malformed-action/>``, ``prev`` (no command goes back) ``bad-request`` +
``<bad-action/>``, a missing, malformed or invalid form ``bad-request`` +
``<bad-payload/>`` (the session stays open for a corrected form), an unknown
session ``bad-request`` + ``<bad-sessionid/>`` and an ended one ``not-allowed`` +
``<session-expired/>``.

A command is an object with ``node``, ``name``, ``allowed(requester, local)``,
``execute(context)`` and ``submit(context, values)``; the last two return a
``Stage`` (or a Deferred / coroutine of one). ``AdhocCommands.add_command`` adds
one; the XEP-0133 commands (``service_admin.py``) are added when
``admin_commands`` is on, for the ``[server] admins``.
"""

from __future__ import annotations

import collections
import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol as TypingProtocol

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.config import ConfigError
from tigasepy.interfaces import IExtension, Protocol
from tigasepy.log_level import Logger
from tigasepy.sm.dispatch import as_deferred
from tigasepy.sm.events import StanzaEvent, Target
from tigasepy.sm.host import ExtensionHost
from tigasepy.xmpp import namespaces as ns
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.forms import Form, FormError, find_form, parse_submission

COMMANDS = "http://jabber.org/protocol/commands"
_ACTIONS = frozenset({"execute", "cancel", "prev", "next", "complete"})
_ENDED_KEPT = 1024      # ended session ids remembered, to answer session-expired


def command_error(condition: str, specific: str | None = None, text: str | None = None,
                  error_type: str | None = None) -> StanzaError:
    """A stanza error with XEP-0050's specific condition (``bad-payload``, ``bad-sessionid``, ...)."""
    app = domish.Element((COMMANDS, specific)) if specific else None
    return StanzaError(condition, text, error_type=error_type, app_condition=app)


@dataclass
class Stage:
    """What one step of a command answers.

    ``completed=False`` asks the requester for ``form`` (with ``actions``, the first
    being what ``execute`` means); ``completed=True`` ends the session, with an
    optional result ``form``. ``notes`` are ``(type, text)`` pairs, type
    ``info``/``warn``/``error`` (a command that completed but failed carries an
    ``error`` note).
    """

    form: Form | None = None
    notes: tuple[tuple[str, str], ...] = ()
    completed: bool = True
    actions: tuple[str, ...] = ("complete",)


@dataclass
class CommandSession:
    """One execution of a command: who runs it, the form it was last offered, its state."""

    id: str
    node: str
    requester: JID
    to: str
    form: Form | None = None
    actions: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)
    timer: Any = None

    @property
    def owner(self) -> str:
        """The requester's bare JID."""
        return self.requester.userhost()


class AdhocCommand(TypingProtocol):
    """What ``AdhocCommands`` needs from a command."""

    node: str
    name: str

    def allowed(self, requester: JID, local: bool) -> bool:
        """May ``requester`` (``local``: from a session on this server) list and run it?"""

    def execute(self, session: CommandSession) -> Any:
        """The first ``Stage`` (a form to fill, or the completed result)."""

    def submit(self, session: CommandSession, values: dict[str, Any]) -> Any:
        """The next ``Stage`` for the checked values of the submitted form."""


@dataclass(frozen=True)
class AdhocConfig:
    """``[extensions.adhoc]``: command sessions and the XEP-0133 commands."""

    admin_commands: bool = True
    session_timeout_s: int = 600
    max_sessions_per_user: int = 5

    def validate(self, path: tuple[str, ...]) -> None:
        """The limits must be at least 1."""
        for name in ("session_timeout_s", "max_sessions_per_user"):
            if getattr(self, name) < 1:
                raise ConfigError("must be >= 1", path + (name,))


@implementer(IExtension)
class AdhocCommands:
    """Lists and runs ad-hoc commands addressed to the server."""

    name = "adhoc"
    protocols = (
        Protocol("XEP-0050", "1.3.0", "complete", "commands on the server's domain; no prev stage"),
        Protocol("XEP-0133", "1.3.1", "partial",
                 "add, delete, end session, change password, online users (number and list), announce"),
    )
    config_type = AdhocConfig
    _log = Logger()

    def __init__(self, config: AdhocConfig | None, host: ExtensionHost) -> None:
        self._config = config or AdhocConfig()
        self._host = host
        self.commands: dict[str, AdhocCommand] = {}
        self._sessions: dict[str, CommandSession] = {}
        self._ended: collections.OrderedDict[str, None] = collections.OrderedDict()
        host.add_feature(COMMANDS)
        host.add_disco_node(COMMANDS, info=self._list_info, items=self._list_items)
        host.on_iq(COMMANDS, "command", self._command, types=("set",), targets=(Target.HOST,))
        host.on_close(self._close)
        if self._config.admin_commands:
            from tigasepy.extensions.service_admin import admin_commands

            for command in admin_commands(host):
                self.add_command(command)

    def add_command(self, command: AdhocCommand) -> None:
        """Offer ``command`` (its node must be new)."""
        if command.node in self.commands or command.node == COMMANDS:
            raise ValueError(f"a command on node {command.node!r} exists")
        self.commands[command.node] = command
        self._host.add_disco_node(command.node, info=lambda event: self._command_info(event, command))

    def _close(self) -> None:
        for session in list(self._sessions.values()):
            self._end(session)

    # -- disco --------------------------------------------------------------------------
    def _list_info(self, event: StanzaEvent) -> domish.Element:
        query = domish.Element((ns.DISCO_INFO, "query"))
        identity = query.addElement("identity")
        identity["category"] = "automation"
        identity["type"] = "command-list"
        identity["name"] = "Commands"
        query.addElement("feature")["var"] = COMMANDS
        return query

    def _list_items(self, event: StanzaEvent) -> domish.Element:
        query = domish.Element((ns.DISCO_ITEMS, "query"))
        local = event.session is not None
        for node, command in self.commands.items():
            if event.sender is not None and command.allowed(event.sender, local):
                item = query.addElement("item")
                item["jid"] = event.to.full() if event.to is not None else ""
                item["node"] = node
                item["name"] = command.name
        return query

    def _command_info(self, event: StanzaEvent, command: AdhocCommand) -> domish.Element:
        if event.sender is None or not command.allowed(event.sender, event.session is not None):
            raise StanzaError("forbidden")
        query = domish.Element((ns.DISCO_INFO, "query"))
        identity = query.addElement("identity")
        identity["category"] = "automation"
        identity["type"] = "command-node"
        identity["name"] = command.name
        query.addElement("feature")["var"] = COMMANDS
        query.addElement("feature")["var"] = ns.DATA_FORMS
        return query

    # -- execution ----------------------------------------------------------------------
    async def _command(self, event: StanzaEvent) -> domish.Element:
        request = event.stanza.firstChildElement()
        node = request.getAttribute("node")
        if not node:
            raise StanzaError("bad-request", "The command has no node")
        action = request.getAttribute("action") or "execute"
        if action not in _ACTIONS:
            raise command_error("bad-request", "malformed-action", f"Unknown action {action!r}")
        command = self.commands.get(node)
        if command is None:
            raise StanzaError("item-not-found", "No such command")
        requester = event.sender
        if requester is None or not command.allowed(requester, event.session is not None):
            raise StanzaError("forbidden", "You may not run this command", error_type="cancel")
        sessionid = request.getAttribute("sessionid")
        if not sessionid:
            return await self._start(event, command, action)
        session = self._lookup(sessionid, node, requester)
        if action == "cancel":
            self._end(session)
            return _reply(session, "canceled")
        if action == "prev":
            raise command_error("bad-request", "bad-action", "This command cannot go back")
        if session.form is not None:
            try:
                values = parse_submission(find_form(request), session.form)
            except FormError as e:
                raise command_error("bad-request", "bad-payload", str(e)) from None
        else:
            values = {}
        return await self._step(session, command.submit, values)

    async def _start(self, event: StanzaEvent, command: AdhocCommand, action: str) -> domish.Element:
        requester = event.sender
        session = CommandSession(id=_new_id(), node=command.node, requester=requester,
                                 to=event.to.full() if event.to is not None else "")
        if action == "cancel":
            return _reply(session, "canceled")
        if action != "execute":
            raise command_error("bad-request", "bad-sessionid", "Start a command with action 'execute'")
        owner = session.owner
        if sum(1 for s in self._sessions.values() if s.owner == owner) >= self._config.max_sessions_per_user:
            raise StanzaError("not-allowed", "Too many command sessions; complete or cancel one")
        return await self._step(session, command.execute)

    async def _step(self, session: CommandSession, step: Any, *args: Any) -> domish.Element:
        try:
            stage = await _resolve(step(session, *args))
        except StanzaError as e:
            app = e.app_condition
            if app is None or app.name != "bad-payload":
                self._end(session)
            raise
        except BaseException:
            self._end(session)
            raise
        if stage.completed:
            self._end(session)
            return _reply(session, "completed", stage)
        session.form = stage.form
        session.actions = stage.actions
        self._keep(session)
        return _reply(session, "executing", stage)

    def _lookup(self, sessionid: str, node: str, requester: JID) -> CommandSession:
        session = self._sessions.get(sessionid)
        if session is None or session.node != node or session.requester.full() != requester.full():
            if session is None and sessionid in self._ended:
                raise command_error("not-allowed", "session-expired", "The command session has ended")
            raise command_error("bad-request", "bad-sessionid", "No such command session")
        return session

    def _keep(self, session: CommandSession) -> None:
        if session.timer is not None and session.timer.active():
            session.timer.cancel()
        self._sessions[session.id] = session
        session.timer = self._host.clock.callLater(self._config.session_timeout_s, self._end, session)

    def _end(self, session: CommandSession) -> None:
        if session.timer is not None and session.timer.active():
            session.timer.cancel()
        session.timer = None
        if self._sessions.pop(session.id, None) is not None:
            self._ended[session.id] = None
            while len(self._ended) > _ENDED_KEPT:
                self._ended.popitem(last=False)


async def _resolve(result: Any) -> Any:
    d = as_deferred(result)
    return await d if d is not None else result


def _new_id() -> str:
    return secrets.token_hex(8)


def _reply(session: CommandSession, status: str, stage: Stage | None = None) -> domish.Element:
    reply = domish.Element((COMMANDS, "command"))
    reply["node"] = session.node
    reply["sessionid"] = session.id
    reply["status"] = status
    if stage is None:
        return reply
    if status == "executing" and stage.actions:
        actions = reply.addElement("actions")
        actions["execute"] = stage.actions[0]
        for action in stage.actions:
            actions.addElement(action)
    if stage.form is not None:
        reply.addChild(stage.form.toElement())
    for kind, text in stage.notes:
        note = reply.addElement("note", content=text)
        note["type"] = kind
    return reply

