"""The receiving side of a server-to-server stream (RFC 6120, XEP-0178, XEP-0220, XEP-0288).

Negotiation, in the order a peer meets it:

1. Stream header: ``to`` must be a domain served here (``host-unknown`` otherwise).
2. STARTTLS, required unless ``[s2s] tls_required = false`` or the peer's ``from`` is in
   ``insecure_domains``. On the direct-TLS port (XEP-0368) the stream starts encrypted.
3. Authentication, for (sender domain, our domain) pairs:
   - SASL EXTERNAL (XEP-0178), offered when the peer's certificate is valid for the
     ``from`` of its stream header; success authenticates that pair (after a restart).
   - Server Dialback (XEP-0220): a ``<db:result/>`` carrying a key for a pair. When the
     peer's certificate is valid for the sender domain the pair is accepted at once;
     otherwise, if dialback is allowed for that domain, the key goes to the sender's
     authoritative server in a ``<db:verify/>`` over one of our outgoing streams.
   - ``<db:verify/>`` requests (we are the authoritative server) are answered with our
     own secret, on any stream past TLS.
4. XEP-0288: a peer that sends ``<bidi xmlns='urn:xmpp:bidi'/>`` may receive stanzas for
   its authenticated domains on this stream too.

Stanzas must come from an authenticated domain (``invalid-from`` otherwise; nothing
authenticated at all: ``not-authorized``) to a domain served here (``host-unknown``).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from twisted.python.failure import Failure
from twisted.words.xish import domish

from tigasepy.s2s import dialback
from tigasepy.s2s.dialback import NS_DIALBACK, NS_DIALBACK_FEATURE
from tigasepy.s2s.stream import NS_BIDI, NS_BIDI_FEATURE, STANZAS, ServerStream, addresses, new_stream_id
from tigasepy.xmpp import namespaces as ns

if TYPE_CHECKING:
    from tigasepy.s2s.service import S2SService

#: Dialback requests one stream may have waiting at once (XEP-0220 resource-constraint).
MAX_PENDING_DIALBACK = 10
#: Domain pairs one stream may carry.
MAX_PAIRS = 100


class IncomingServerStream(ServerStream):
    """A stream another server opened to us."""

    direction = "incoming"

    def __init__(self, service: "S2SService", direct_tls: bool = False) -> None:
        super().__init__(service, direct_tls)
        self.local_domain = ""             # the 'to' of the peer's header
        self.remote_domain = ""            # the 'from' of the peer's header ('' if absent)
        self.authenticated: set[tuple[str, str]] = set()   # (remote, local) pairs
        #: How each pair authenticated: "sasl-external", "certificate" or "dialback".
        self.auth_methods: dict[tuple[str, str], str] = {}
        self.remote_domains: set[str] = set()
        self._pending: set[tuple[str, str]] = set()
        self._sasl_done = False
        self._offered_external = False
        self._counted_unauthenticated = False
        self._useful = False               # answered a verify or authenticated a pair
        self._auth_timer: Any = None
        self.peer_host = ""

    # -- life cycle ---------------------------------------------------------------------
    def connectionMade(self) -> None:
        super().connectionMade()
        try:
            self.peer_host = self.transport.getPeer().host
        except Exception:  # noqa: BLE001 - a transport without a peer address
            self.peer_host = "?"
        refusal = self.service.incoming_opened(self)
        self._counted_unauthenticated = True
        self._auth_timer = self.clock.callLater(self.config.connect_timeout_s, self._auth_timeout)
        if refusal is not None:
            self.close(*refusal)

    def stream_closed(self, reason: Failure) -> None:
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self._auth_timer = None
        self._leave_unauthenticated()
        self.service.incoming_closed(self)

    def stream_closing(self) -> None:
        self.service.stream_closing(self)

    def _auth_timeout(self) -> None:
        self._auth_timer = None
        if not self.authenticated and not self._useful and not self.closing:
            self.close("connection-timeout", "No authentication in time")

    def _leave_unauthenticated(self) -> None:
        if self._counted_unauthenticated:
            self._counted_unauthenticated = False
            self.service.unauthenticated -= 1

    def peer_name(self) -> str:
        return self.remote_domain or self.peer_address()

    def local_name(self) -> str:
        return self.local_domain or self.service.default_domain

    # -- policy -------------------------------------------------------------------------
    def _tls_required(self) -> bool:
        if self.service.tls is None:
            return False
        return self.config.tls_required and self.remote_domain not in self.config.insecure_domains

    def _dialback_allowed(self, domain: str) -> bool:
        config = self.config
        return config.dialback or domain in config.unverified_domains or domain in config.insecure_domains

    # -- header and features ------------------------------------------------------------
    def stream_started(self, attrs: dict[str, str]) -> None:
        to = (attrs.get("to") or "").lower()
        sender = (attrs.get("from") or "").lower()
        if self._sasl_done and sender and sender != self.remote_domain:
            self.close("invalid-from", "The stream restarted for another domain")
            return
        if not to or not self.service.is_local(to):
            self.stream_id = self.stream_id or new_stream_id()
            self.close("host-unknown", f"This server does not serve {to or 'an unnamed domain'}")
            return
        if self.local_domain and to != self.local_domain:
            self.close("host-unknown", "The stream restarted for another domain")
            return
        self.local_domain = to
        if sender:
            self.remote_domain = sender
        version = attrs.get("version", "")
        self.stream_id = new_stream_id()
        if not version.startswith("1."):
            self.send_header(self.local_domain, self.remote_domain or None, self.stream_id)
            self.close("unsupported-version", "XMPP 1.0 streams only")
            return
        self.send_header(self.local_domain, self.remote_domain or None, self.stream_id)
        self._send_features()

    def _send_features(self) -> None:
        features = domish.Element((ns.STREAMS, "features"))
        self._offered_external = False
        if not self._sasl_done:
            if not self.secure and self.service.tls is not None:
                starttls = features.addElement((ns.TLS, "starttls"))
                if self._tls_required():
                    starttls.addElement("required")
            if self.secure or not self._tls_required():
                if (self.config.sasl_external and self.secure and self.remote_domain
                        and self.peer_valid_for(self.remote_domain)):
                    mechanisms = features.addElement((ns.SASL, "mechanisms"))
                    mechanisms.addElement("mechanism", content="EXTERNAL")
                    self._offered_external = True
                if self._dialback_allowed(self.remote_domain) or self.secure:
                    features.addElement((NS_DIALBACK_FEATURE, "dialback")).addElement("errors")
        if self.config.bidi and not self.bidi:
            features.addElement((NS_BIDI_FEATURE, "bidi"))
        self.send_element(features)

    # -- elements -----------------------------------------------------------------------
    def element(self, element: domish.Element) -> None:
        uri, name = element.uri, element.name
        if uri is None and name in STANZAS:
            self._stanza(element)
        elif uri == ns.TLS and name == "starttls":
            self._starttls()
        elif not self.secure and self._tls_required():
            self.close("policy-violation", "Use STARTTLS first")
        elif uri == NS_DIALBACK and name == "result":
            self._db_result(element)
        elif uri == NS_DIALBACK and name == "verify":
            self._db_verify(element)
        elif uri == ns.SASL:
            self._sasl(element)
        elif uri == NS_BIDI and name == "bidi":
            if self.config.bidi:
                self.bidi = True
                for remote, local in self.authenticated:
                    self.service.add_bidi(local, remote, self)
        else:
            self.close("unsupported-stanza-type", f"Unexpected element {name}")

    def _starttls(self) -> None:
        if self.secure or self.service.tls is None:
            self.write(f"<failure xmlns='{ns.TLS}'/></stream:stream>".encode())
            self.abort()
            return
        self.write(f"<proceed xmlns='{ns.TLS}'/>".encode())
        self.transport.startTLS(self.service.tls.server)
        self.secure = True
        self.restart()

    # -- SASL EXTERNAL (XEP-0178) -------------------------------------------------------
    def _sasl(self, element: domish.Element) -> None:
        if element.name != "auth" or self._sasl_done:
            self.close("not-authorized", "Unexpected SASL element")
            return
        if element.getAttribute("mechanism") != "EXTERNAL" or not self._offered_external:
            self._sasl_failure("invalid-mechanism")
            return
        text = str(element).strip()
        authzid = ""
        if text and text != "=":
            try:
                authzid = base64.b64decode(text, validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                self._sasl_failure("incorrect-encoding")
                return
        domain = self.remote_domain
        if authzid and authzid.lower() != domain:
            self._sasl_failure("invalid-authzid")
            return
        if not self.peer_valid_for(domain):
            self._sasl_failure("not-authorized")
            return
        self.write(f"<success xmlns='{ns.SASL}'/>".encode())
        self._sasl_done = True
        self._log.info("incoming s2s stream from {peer} authenticated {domain} with SASL EXTERNAL",
                       peer=self.peer_address(), domain=domain)
        self._authenticate(domain, self.local_domain, "sasl-external")
        self.restart()

    def _sasl_failure(self, condition: str) -> None:
        self.write(f"<failure xmlns='{ns.SASL}'><{condition}/></failure>".encode())

    # -- dialback (XEP-0220) ------------------------------------------------------------
    def _db_result(self, element: domish.Element) -> None:
        if element.getAttribute("type"):
            # An answer on an incoming stream: we never ask over one (XEP-0288 5: ignore).
            self._log.info("ignoring an unsolicited dialback answer from {peer}", peer=self.peer_name())
            return
        sender = (element.getAttribute("from") or "").lower()
        target = (element.getAttribute("to") or "").lower()
        if not sender or not target:
            self.close("improper-addressing", "db:result needs 'from' and 'to'")
            return
        if not self.service.is_local(target):
            self.write(dialback.result(target, sender, type="error", condition="item-not-found"))
            return
        pair = (sender, target)
        if pair in self.authenticated or pair in self._pending:
            return
        if len(self._pending) >= MAX_PENDING_DIALBACK or len(self.authenticated) >= MAX_PAIRS:
            self.write(dialback.result(target, sender, type="error", condition="resource-constraint"))
            return
        if self.peer_valid_for(sender):
            # The sender proved its domain with its certificate: nothing to call back.
            self._log.info("incoming s2s stream from {peer}: {domain} authenticated by its certificate "
                           "(dialback request)", peer=self.peer_address(), domain=sender)
            self.write(dialback.result(target, sender, type="valid"))
            self._authenticate(sender, target, "certificate")
            return
        if not self._dialback_allowed(sender):
            self._log.info("refusing dialback from {domain}: its certificate is not valid ({problem}) and "
                           "dialback is off", domain=sender, problem=self._certificate_problem(sender))
            self.write(dialback.result(target, sender, type="error", condition="not-authorized"))
            return
        self._pending.add(pair)
        d = self.service.verify_dialback(target, sender, self.stream_id, str(element).strip())
        d.addCallback(self._db_answer, pair)

    def _certificate_problem(self, domain: str) -> str:
        certificate = self.peer_certificate()
        return "no TLS" if certificate is None else certificate.problem(domain)

    def _db_answer(self, answer: tuple[str, str | None], pair: tuple[str, str]) -> None:
        self._pending.discard(pair)
        if self.closing:
            return
        sender, target = pair
        kind, condition = answer
        self._useful = True
        if kind == "valid":
            self._log.info("incoming s2s stream from {peer}: {domain} authenticated with dialback",
                           peer=self.peer_address(), domain=sender)
            self.write(dialback.result(target, sender, type="valid"))
            self._authenticate(sender, target, "dialback")
        elif kind == "invalid":
            self._log.warn("incoming s2s stream from {peer}: invalid dialback key for {domain}",
                           peer=self.peer_address(), domain=sender)
            self.write(dialback.result(target, sender, type="invalid"))
            if not self.authenticated:
                self.close("not-authorized", "Dialback key not valid")
        else:
            self.write(dialback.result(target, sender, type="error", condition=condition))

    def _db_verify(self, element: domish.Element) -> None:
        if element.getAttribute("type"):
            self._log.info("ignoring an unsolicited dialback verification answer from {peer}",
                           peer=self.peer_name())
            return
        receiving = (element.getAttribute("from") or "").lower()
        originating = (element.getAttribute("to") or "").lower()
        stream_id = element.getAttribute("id") or ""
        if not receiving or not originating or not stream_id:
            self.close("improper-addressing", "db:verify needs 'from', 'to' and 'id'")
            return
        self._useful = True
        if not self.service.is_local(originating):
            self.write(dialback.verify(originating, receiving, stream_id, type="error",
                                       condition="item-not-found"))
            return
        valid = self.service.check_dialback_key(receiving, originating, stream_id, str(element))
        self.write(dialback.verify(originating, receiving, stream_id, type="valid" if valid else "invalid"))

    def _authenticate(self, remote: str, local: str, method: str) -> None:
        first = not self.authenticated
        self.authenticated.add((remote, local))
        self.auth_methods[(remote, local)] = method
        self.remote_domains.add(remote)
        if first:
            self.authenticated_now()
            self._leave_unauthenticated()
            if self._auth_timer is not None and self._auth_timer.active():
                self._auth_timer.cancel()
            self._auth_timer = None
        if self.bidi:
            self.service.add_bidi(local, remote, self)

    # -- stanzas ------------------------------------------------------------------------
    def _stanza(self, stanza: domish.Element) -> None:
        if not self.authenticated:
            self.close("not-authorized", "Authenticate first")
            return
        pair = addresses(stanza)
        if pair is None:
            self.close("improper-addressing", "Stanzas between servers need 'from' and 'to'")
            return
        sender, target = pair
        if sender not in self.remote_domains:
            self.close("invalid-from", f"{sender} is not authenticated on this stream")
            return
        if not self.service.is_local(target):
            self.close("host-unknown", f"This server does not serve {target}")
            return
        self.touch()
        self.service.inbound(stanza)

    # -- XEP-0288: writing back on this stream --------------------------------------------
    def can_send(self, local: str, remote: str) -> bool:
        """True when stanzas from ``local`` to ``remote`` may go over this stream."""
        return self.bidi and not self.closing and (remote, local) in self.authenticated
