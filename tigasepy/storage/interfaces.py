"""Storage interfaces, one per area. Extensions ask for these, never for a backend class.

Every method returns a Deferred (memory stores return already-fired ones) so that
callers are the same for every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zope.interface import Interface


class AccountExists(Exception):
    """An account with that JID already exists."""


class NoSuchAccount(Exception):
    """No account with that JID exists."""


class StorageUnavailable(Exception):
    """The database cannot be reached (down, refusing connections, connection lost).

    A temporary condition: the request may succeed later. Callers turn it into a
    temporary error for the client (``internal-server-error``,
    ``temporary-auth-failure``); the message says which database and why, in one
    line, and never holds a password.
    """


@dataclass(frozen=True)
class ScramCredential:
    """The salted SCRAM keys of one account for one hash (RFC 5802 section 3). Never a password."""

    hash_name: str        # "SHA-1" or "SHA-256"
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


class IAccountStore(Interface):
    """Accounts and their SCRAM credentials. JIDs are bare strings, already prepared."""

    def create(jid: str, credentials: list[ScramCredential]) -> Any:
        """Create an account; fails with ``AccountExists``."""

    def set_credentials(jid: str, credentials: list[ScramCredential]) -> Any:
        """Replace the account's credentials; fails with ``NoSuchAccount``."""

    def get_credential(jid: str, hash_name: str) -> Any:
        """Fires with the ``ScramCredential`` for ``hash_name``, or None (no account or no such hash)."""

    def exists(jid: str) -> Any:
        """Fires with True when the account exists."""

    def delete(jid: str) -> Any:
        """Delete the account and its credentials; fires with True if it existed."""

    def list_accounts(domain: str | None = None) -> Any:
        """Fires with the sorted bare JIDs of all accounts (of ``domain`` when given)."""


@dataclass(frozen=True)
class RosterItem:
    """One contact in a user's roster with its RFC 6121 subscription state.

    ``subscription`` is none/to/from/both; ``ask`` is True for pending-out;
    ``pending_in`` holds an unanswered inbound subscription request; ``approved``
    is a subscription pre-approval (RFC 6121 3.4); ``in_roster`` is False for a
    row kept only to remember ``pending_in`` for a contact the user never added.
    """

    contact: str
    name: str | None = None
    subscription: str = "none"
    ask: bool = False
    pending_in: bool = False
    approved: bool = False
    groups: tuple[str, ...] = ()
    in_roster: bool = True


class IRosterStore(Interface):
    """Rosters (RFC 6121 section 2) keyed by the owner's bare JID."""

    def get_items(owner: str) -> Any:
        """Fires with a list of every ``RosterItem`` row of ``owner`` (hidden ones too)."""

    def get_item(owner: str, contact: str) -> Any:
        """Fires with the ``RosterItem`` for ``contact`` or None."""

    def put_item(owner: str, item: RosterItem) -> Any:
        """Insert or replace the row for ``item.contact``; bumps the roster version."""

    def remove_item(owner: str, contact: str) -> Any:
        """Delete the row for ``contact`` if present; bumps the roster version."""

    def get_version(owner: str) -> Any:
        """Fires with the roster version, an integer that grows on every change."""

    def remove_owner(owner: str) -> Any:
        """Delete the whole roster of ``owner`` (account removal)."""


@dataclass(frozen=True)
class OfflineMessage:
    """A message stored for an account with no available resource."""

    id: int
    stamp: float          # seconds since the epoch when the server received it
    xml: str              # the serialized stanza


class IOfflineStore(Interface):
    """Messages kept for offline users (RFC 6121 8.5.2.2, XEP-0160)."""

    def append(owner: str, xml: str, stamp: float) -> Any:
        """Store a message; fires with its id once it is durable."""

    def count(owner: str) -> Any:
        """Fires with the number of stored messages for ``owner``."""

    def fetch(owner: str, limit: int | None = None) -> Any:
        """Fires with the stored ``OfflineMessage`` list, oldest first, without removing them."""

    def delete(owner: str, ids: list[int]) -> Any:
        """Remove the given messages (after they were delivered)."""

    def remove_owner(owner: str) -> Any:
        """Delete every stored message of ``owner``."""


@dataclass(frozen=True)
class VCard:
    """A user's stored vcard-temp (XEP-0054) and the SHA-1 of its photo (XEP-0153)."""

    xml: str                      # the serialized <vCard xmlns='vcard-temp'/> element
    photo_hash: str | None = None  # hex SHA-1 of the PHOTO's BINVAL, None without one


class IVCardStore(Interface):
    """One vCard per account (XEP-0054), keyed by the owner's bare JID."""

    def get(owner: str) -> Any:
        """Fires with the owner's ``VCard`` or None."""

    def set(owner: str, vcard: VCard) -> Any:
        """Insert or replace the owner's vCard."""

    def remove_owner(owner: str) -> Any:
        """Delete the owner's vCard (account removal)."""


class IPrivateStore(Interface):
    """Private XML storage (XEP-0049): one XML fragment per owner and namespace."""

    def get(owner: str, namespace: str) -> Any:
        """Fires with the stored XML (one or more serialized elements) or None."""

    def set(owner: str, items: dict[str, str]) -> Any:
        """Insert or replace the fragments of several namespaces at once (one transaction)."""

    def namespaces(owner: str) -> Any:
        """Fires with the sorted namespaces the owner has stored something under."""

    def remove_owner(owner: str) -> Any:
        """Delete everything the owner stored."""


@dataclass(frozen=True)
class PepItem:
    """One stored item of a personal eventing node (XEP-0163): its id and serialized payload."""

    item_id: str
    xml: str


class IPepStore(Interface):
    """Personal eventing (XEP-0163) nodes and items, per owner (a bare JID) and node name.

    A node's configuration is a mapping of ``pubsub#*`` option names to string values.
    Items are kept in publication order; republishing an id makes it the newest.
    """

    def get_node(owner: str, node: str) -> Any:
        """Fires with the node's configuration (a dict) or None when there is no such node."""

    def nodes(owner: str) -> Any:
        """Fires with the sorted node names of ``owner``."""

    def put_node(owner: str, node: str, config: dict[str, str]) -> Any:
        """Create the node or replace its configuration (its items stay)."""

    def delete_node(owner: str, node: str) -> Any:
        """Delete the node and its items; fires with True when it existed."""

    def items(owner: str, node: str, limit: int | None = None) -> Any:
        """Fires with the node's ``PepItem``s, newest first, at most ``limit``."""

    def get_items(owner: str, node: str, item_ids: list[str]) -> Any:
        """Fires with the ``PepItem``s of those ids that exist, in the order asked."""

    def publish(owner: str, node: str, item: PepItem, max_items: int | None) -> Any:
        """Store ``item`` as the newest (replacing one with its id), then keep only the newest
        ``max_items`` (None: no limit); fires with the ids dropped by that trim, newest first."""

    def retract(owner: str, node: str, item_id: str) -> Any:
        """Delete one item; fires with True when it existed."""

    def purge(owner: str, node: str) -> Any:
        """Delete every item of the node."""

    def remove_owner(owner: str) -> Any:
        """Delete every node and item of ``owner``."""


@dataclass(frozen=True)
class LastActivity:
    """When an account's last session ended, and the status it left with (XEP-0012)."""

    stamp: float          # seconds since the epoch
    status: str = ""


class ILastActivityStore(Interface):
    """The last logout of each account (XEP-0012)."""

    def get(owner: str) -> Any:
        """Fires with the owner's ``LastActivity`` or None."""

    def set(owner: str, activity: LastActivity) -> Any:
        """Insert or replace the owner's last activity."""

    def remove_owner(owner: str) -> Any:
        """Forget the owner's last activity."""


@dataclass(frozen=True)
class ArchivedMessage:
    """One message in a user's archive (XEP-0313).

    ``id`` is the archive UID the server made up (also the XEP-0359 ``stanza-id``);
    ``seq`` orders the archive (it grows with every message stored and is never
    reused); ``with_jid`` is the other party as addressed (full or bare JID).
    """

    id: str
    seq: int
    with_jid: str
    stamp: float          # seconds since the epoch when the server sent or received it
    xml: str              # the serialized stanza


@dataclass(frozen=True)
class ArchiveQuery:
    """Which messages of an archive a query selects; every given criterion must hold.

    ``with_jid`` with a resource matches the other party's full JID exactly, without
    one it matches the other party's bare JID. ``start``/``end`` are inclusive stamps,
    ``after_seq``/``before_seq`` exclusive positions, ``ids`` a set of archive UIDs.
    """

    with_jid: str | None = None
    start: float | None = None
    end: float | None = None
    after_seq: int | None = None
    before_seq: int | None = None
    ids: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ArchivePrefs:
    """A user's archiving preferences (XEP-0441): ``default`` is always, never or roster."""

    default: str = "always"
    always: tuple[str, ...] = ()
    never: tuple[str, ...] = ()


class IArchiveStore(Interface):
    """Per-user message archives and archiving preferences (XEP-0313, XEP-0441)."""

    def append(owner: str, id: str, with_jid: str, stamp: float, xml: str) -> Any:
        """Store a message at the end of ``owner``'s archive; fires with its ``seq``.

        ``id`` must be new in that archive.
        """

    def append_many(rows: list[tuple[str, str, str, float, str]]) -> Any:
        """Store ``(owner, id, with_jid, stamp, xml)`` rows in one transaction, in list order
        (each at the end of its owner's archive); fires with how many were stored."""

    def positions(owner: str, ids: list[str]) -> Any:
        """Fires with a dict from each of ``ids`` found in ``owner``'s archive to its ``seq``."""

    def query(owner: str, query: ArchiveQuery, limit: int, newest_first: bool = False,
              offset: int = 0) -> Any:
        """Fires with at most ``limit`` matching ``ArchivedMessage``s, oldest first.

        With ``newest_first`` they come newest first (the end of the result set);
        ``offset`` skips that many matches first.
        """

    def count(owner: str, query: ArchiveQuery) -> Any:
        """Fires with the number of messages ``query`` selects."""

    def bounds(owner: str) -> Any:
        """Fires with the (oldest, newest) ``ArchivedMessage``s, or None for an empty archive."""

    def trim(owner: str, keep: int) -> Any:
        """Delete the oldest messages of ``owner`` beyond the newest ``keep``; fires with how many."""

    def expire(before: float) -> Any:
        """Delete every archived message (of every owner) stamped before ``before``; fires with how many."""

    def get_prefs(owner: str) -> Any:
        """Fires with ``owner``'s ``ArchivePrefs``, or None when never set."""

    def set_prefs(owner: str, prefs: ArchivePrefs) -> Any:
        """Store ``owner``'s preferences (replacing earlier ones)."""

    def remove_owner(owner: str) -> Any:
        """Delete ``owner``'s archive and preferences; fires with the number of messages removed."""


# -- privacy lists and the blocking command (XEP-0016, XEP-0191) --------------------------------

PRIVACY_KINDS = ("iq", "message", "presence-in", "presence-out")
"""The stanza kinds a privacy list item may name (XEP-0016 section 2.1)."""


@dataclass(frozen=True)
class PrivacyItem:
    """One rule of a privacy list (XEP-0016 section 2.1).

    ``type`` is ``jid``, ``group``, ``subscription`` or None (the fall-through item,
    ``value`` None too); ``action`` is ``allow`` or ``deny``; ``order`` is unique in
    its list, 0..2**32-1; ``kinds`` holds some of ``PRIVACY_KINDS``, none meaning
    every stanza in both directions. A ``jid`` value is a prepared JID.
    """

    order: int
    action: str
    type: str | None = None
    value: str | None = None
    kinds: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PrivacySettings:
    """An account's privacy lists (name -> items ordered by ``order``) and its default list."""

    lists: dict[str, tuple[PrivacyItem, ...]] = field(default_factory=dict)
    default: str | None = None


class IPrivacyStore(Interface):
    """Privacy lists (XEP-0016) per account, and which one is the default.

    The blocking command (XEP-0191) keeps its blocklist in the default list, so the
    two protocols share this one store (XEP-0191 section 4). Active lists belong to
    sessions and are not stored.
    """

    def get_all(owner: str) -> Any:
        """Fires with the ``PrivacySettings`` of ``owner`` (empty when it has none)."""

    def put_list(owner: str, name: str, items: tuple[PrivacyItem, ...], make_default: bool = False) -> Any:
        """Create or replace list ``name`` with ``items`` (in one transaction with
        making it the default when ``make_default``)."""

    def remove_list(owner: str, name: str) -> Any:
        """Delete list ``name`` (no longer the default if it was); fires True if it existed."""

    def set_default(owner: str, name: str | None) -> Any:
        """Make list ``name`` the default (None: no default list); fails with ``KeyError``
        when ``owner`` has no list ``name``."""

    def remove_owner(owner: str) -> Any:
        """Delete every list of ``owner`` (account removal)."""
