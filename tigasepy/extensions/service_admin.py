"""Service Administration (XEP-0133): the ad-hoc commands the ``[server] admins`` may run.

Each command here is only its form and the mapping of errors to stanza errors;
the work is done by ``tigasepy.admin.commands.ServerAdmin``, which every admin
front end shares. Only local sessions of an admin named in the config may list
or run them (the list is read at every request, so a config reload applies).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.words.protocols.jabber.jid import JID

from tigasepy.admin.commands import ServerAdmin, is_admin
from tigasepy.auth.accounts import AccountManager, DomainNotHosted, InvalidAccountJID, InvalidPassword
from tigasepy.auth.plain import in_thread_pool, run_inline
from tigasepy.extensions.adhoc import CommandSession, Stage, command_error
from tigasepy.sm.host import ExtensionHost
from tigasepy.storage.interfaces import AccountExists, IAccountStore, NoSuchAccount
from tigasepy.xmpp.errors import StanzaError
from tigasepy.xmpp.forms import Field, Form

ADMIN = "http://jabber.org/protocol/admin"
"""The FORM_TYPE of every XEP-0133 form, and the prefix of its command nodes."""

_MAX_ITEMS = ("25", "50", "75", "100", "150", "200", "none")


def bad_payload(text: str) -> StanzaError:
    """``bad-request`` + ``<bad-payload/>``: the form's content cannot be used."""
    return command_error("bad-request", "bad-payload", text)


class AdminCommand:
    """A XEP-0133 command: a form (or none), then ``run`` with the checked values."""

    node = ""
    name = ""
    title = ""
    instructions = ""

    def __init__(self, admin: ServerAdmin, admins: Callable[[], Iterable[str]],
                 domains: Iterable[str]) -> None:
        self.admin = admin
        self._admins = admins
        self.domains = tuple(domains)

    def allowed(self, requester: JID, local: bool) -> bool:
        """Only a local session of an admin named in ``[server] admins``."""
        return local and is_admin(self._admins(), requester.full())

    def fields(self) -> list[Field]:
        """The form's fields; none means the command runs at once."""
        return []

    def form(self) -> Form | None:
        """The form to fill, or None."""
        fields = self.fields()
        if not fields:
            return None
        return Form("form", title=self.title, instructions=[self.instructions] if self.instructions else [],
                    formNamespace=ADMIN, fields=fields)

    def execute(self, session: CommandSession) -> Any:
        """Offer the form, or run at once when there is none."""
        form = self.form()
        if form is None:
            return self.run(session, {})
        return Stage(form=form, completed=False)

    def submit(self, session: CommandSession, values: dict[str, Any]) -> Any:
        """Run with the submitted values."""
        return self.run(session, values)

    def run(self, session: CommandSession, values: dict[str, Any]) -> Any:
        """Do the work; returns a ``Stage`` (or a Deferred / coroutine of one)."""
        raise NotImplementedError

    def account(self, jid: JID) -> str:
        """``jid`` as a bare account JID of a hosted domain (else ``bad-payload``)."""
        if not jid.user or jid.resource:
            raise bad_payload(f"{jid.full()} is not an account JID (user@domain)")
        if jid.host not in self.domains:
            raise bad_payload(f"{jid.host} is not hosted here")
        return jid.userhost()


def _result(notes: Iterable[tuple[str, str]] = (), form: Form | None = None) -> Stage:
    return Stage(form=form, notes=tuple(notes))


class AddUser(AdminCommand):
    """XEP-0133 4.1: create an account."""

    node = f"{ADMIN}#add-user"
    name = "Add a User"
    title = "Adding a User"
    instructions = "Fill out this form to add a user."

    def fields(self) -> list[Field]:
        return [
            Field("jid-single", var="accountjid", label="The Jabber ID for the account to be added",
                  required=True),
            Field("text-private", var="password", label="The password for this account", required=True),
            Field("text-private", var="password-verify", label="Retype password"),
            Field("text-single", var="email", label="Email address"),
            Field("text-single", var="given_name", label="Given name"),
            Field("text-single", var="surname", label="Family name"),
        ]

    async def run(self, session: CommandSession, values: dict[str, Any]) -> Stage:
        jid = self.account(values["accountjid"])
        password = values["password"]
        verify = values.get("password-verify")
        if verify is not None and verify != password:
            raise bad_payload("The passwords do not match")
        try:
            await self.admin.add_user(jid, password)
        except AccountExists:
            raise StanzaError("conflict", f"The account {jid} exists") from None
        except (InvalidAccountJID, DomainNotHosted, InvalidPassword) as e:
            raise bad_payload(str(e)) from None
        return _result([("info", f"Added {jid}")])


class DeleteUser(AdminCommand):
    """XEP-0133 4.2: delete accounts with their data, ending their sessions."""

    node = f"{ADMIN}#delete-user"
    name = "Delete a User"
    title = "Deleting a User"
    instructions = "Fill out this form to delete a user."

    def fields(self) -> list[Field]:
        return [Field("jid-multi", var="accountjids", label="The Jabber ID(s) to delete", required=True)]

    async def run(self, session: CommandSession, values: dict[str, Any]) -> Stage:
        jids = [self.account(jid) for jid in values["accountjids"]]
        notes = []
        for jid in dict.fromkeys(jids):
            try:
                await self.admin.delete_user(jid)
                notes.append(("info", f"Deleted {jid}"))
            except NoSuchAccount:
                notes.append(("error", f"No account {jid}"))
        return _result(notes)


class EndUserSession(AdminCommand):
    """XEP-0133 4.5: end every session of an account (bare JID) or one (full JID)."""

    node = f"{ADMIN}#end-user-session"
    name = "End User Session"
    title = "Ending a User Session"
    instructions = "Fill out this form to end a user's session."

    def fields(self) -> list[Field]:
        return [Field("jid-multi", var="accountjids", label="The Jabber ID(s) for which to end sessions",
                      required=True)]

    def run(self, session: CommandSession, values: dict[str, Any]) -> Stage:
        jids = values["accountjids"]
        for jid in jids:
            self.account(JID(tuple=(jid.user, jid.host, None)) if jid.user else jid)
        notes = []
        for jid in jids:
            ended = self.admin.end_sessions(jid.full())
            notes.append(("info", f"Ended {ended} session(s) of {jid.full()}"))
        return _result(notes)


class ChangeUserPassword(AdminCommand):
    """XEP-0133 4.7: set an account's password."""

    node = f"{ADMIN}#change-user-password"
    name = "Change User Password"
    title = "Changing a User Password"
    instructions = "Fill out this form to change a user's password."

    def fields(self) -> list[Field]:
        return [
            Field("jid-single", var="accountjid", label="The Jabber ID for this account", required=True),
            Field("text-private", var="password", label="The password for this account", required=True),
        ]

    async def run(self, session: CommandSession, values: dict[str, Any]) -> Stage:
        jid = self.account(values["accountjid"])
        try:
            await self.admin.change_password(jid, values["password"])
        except NoSuchAccount:
            raise StanzaError("item-not-found", f"No account {jid}") from None
        except (InvalidAccountJID, DomainNotHosted, InvalidPassword) as e:
            raise bad_payload(str(e)) from None
        return _result([("info", f"Changed the password of {jid}")])


class GetOnlineUsersNum(AdminCommand):
    """XEP-0133 4.15: how many accounts have a session."""

    node = f"{ADMIN}#get-online-users-num"
    name = "Get Number of Online Users"

    def run(self, session: CommandSession, values: dict[str, Any]) -> Stage:
        count = self.admin.online_count()
        form = Form("result", formNamespace=ADMIN, fields=[
            Field("text-single", var="onlineusersnum", label="The number of online users", value=str(count))])
        return _result(form=form)


class GetOnlineUsersList(AdminCommand):
    """XEP-0133 4.20: the accounts with a session (at most ``max_items``)."""

    node = f"{ADMIN}#get-online-users-list"
    name = "Get List of Online Users"
    title = "Requesting List of Online Users"
    instructions = "Fill out this form to request the online users of this service."

    def fields(self) -> list[Field]:
        return [Field("list-single", var="max_items", label="Maximum number of items to show",
                      options={value: value.capitalize() for value in _MAX_ITEMS})]

    def run(self, session: CommandSession, values: dict[str, Any]) -> Stage:
        max_items = values.get("max_items")
        limit = None if max_items in (None, "none") else int(max_items)
        users = self.admin.online_users(limit)
        form = Form("result", formNamespace=ADMIN, fields=[
            Field("jid-multi", var="onlineuserjids", label="The list of all online users", values=users)])
        return _result(form=form)


class Announce(AdminCommand):
    """XEP-0133 4.23: a headline message to every online session."""

    node = f"{ADMIN}#announce"
    name = "Send Announcement to Online Users"
    title = "Making an Announcement"
    instructions = "Fill out this form to make an announcement to all active users of this service."

    def fields(self) -> list[Field]:
        return [Field("text-multi", var="announcement", label="Announcement", required=True)]

    def run(self, session: CommandSession, values: dict[str, Any]) -> Stage:
        body = "\n".join(values["announcement"]).strip()
        if not body:
            raise bad_payload("The announcement is empty")
        sent = self.admin.announce(body)
        return _result([("info", f"Sent to {sent} session(s)")])


class ReloadConfiguration(AdminCommand):
    """Read the configuration file again and apply it without a restart (not in XEP-0133;
    the equivalent of SIGHUP, see ``tigasepy/reload.py``)."""

    node = "urn:tigasepy:admin#reload-configuration"
    name = "Reload Configuration"

    def run(self, session: CommandSession, values: dict[str, Any]) -> Stage:
        try:
            report = self.admin.reload_configuration()
        except RuntimeError as e:
            raise StanzaError("feature-not-implemented", str(e)) from None
        if not report.ok:
            return _result([("error", report.summary())])
        notes = [("info", f"Applied: {change}") for change in report.changes] or [("info", "No changes")]
        notes += [("warn", f"Needs a restart: {what}") for what in report.restart]
        return _result(notes)


COMMAND_TYPES = (AddUser, DeleteUser, EndUserSession, ChangeUserPassword, GetOnlineUsersNum,
                 GetOnlineUsersList, Announce, ReloadConfiguration)


def admin_commands(host: ExtensionHost) -> list[AdminCommand]:
    """The XEP-0133 commands for the server behind ``host``."""
    config = host.server_config
    auth = config.auth if config is not None else None
    accounts = AccountManager(
        host.store(IAccountStore),
        hashes=auth.scram_hashes if auth else ("SHA-1", "SHA-256"),
        iterations=auth.scram_iterations if auth else 10000,
        domains=host.domains,
        run_blocking=in_thread_pool(host.clock) if hasattr(host.clock, "getThreadPool") else run_inline,
    )
    admin = ServerAdmin(accounts, host)

    def admins() -> Iterable[str]:
        current = host.server_config
        return current.server.admins if current is not None else ()

    return [cls(admin, admins, host.domains) for cls in COMMAND_TYPES]
