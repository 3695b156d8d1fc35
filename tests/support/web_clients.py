"""Small XMPP clients over the web transports, for the [http] integration tests.

``WsClient``: RFC 7395 over the ``websockets`` package (asyncio, shares the reactor's
loop). ``BoshClient``: XEP-0124/0206 with blocking ``urllib`` POSTs run in threads.
Both do SASL (PLAIN or SCRAM via ``tigasepy.auth.scram.ScramClient``) and bind.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import urllib.request
from typing import Any
from xml.etree import ElementTree as ET

from tigasepy.auth.scram import ScramClient

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
STREAMS = "http://etherx.jabber.org/streams"
CLIENT = "jabber:client"
BOSH = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"


def sasl_steps(mechanism: str, user: str, password: str) -> tuple[Any, bytes]:
    """(scram client or None, initial response)."""
    if mechanism == "PLAIN":
        return None, f"\0{user}\0{password}".encode()
    scram = ScramClient(mechanism, user, password)
    return scram, scram.first()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode() if data else "="


class WsClient:
    """One RFC 7395 connection; ``received`` keeps the parsed messages in order."""

    def __init__(self, url: str, domain: str, ssl_context: ssl.SSLContext | None = None) -> None:
        self.url = url
        self.domain = domain
        self.ssl_context = ssl_context
        self.ws: Any = None
        self.jid = ""

    async def connect(self) -> None:
        import websockets

        self.ws = await websockets.connect(self.url, subprotocols=["xmpp"], ssl=self.ssl_context,
                                           open_timeout=10)
        assert self.ws.subprotocol == "xmpp"

    async def send(self, xml: str) -> None:
        await self.ws.send(xml)

    async def recv(self, timeout: float = 10) -> ET.Element:
        text = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(text, str)
        return ET.fromstring(text)

    async def open(self) -> ET.Element:
        """Send ``<open/>``; returns the ``<stream:features/>`` after the server's ``<open/>``."""
        await self.send(f"<open xmlns='{FRAMING}' to='{self.domain}' version='1.0'/>")
        opened = await self.recv()
        assert opened.tag == f"{{{FRAMING}}}open", opened.tag
        self.stream_id = opened.get("id")
        features = await self.recv()
        assert features.tag == f"{{{STREAMS}}}features", features.tag
        return features

    async def login(self, user: str, password: str, mechanism: str = "SCRAM-SHA-256",
                    resource: str = "web") -> str:
        features = await self.authenticate(user, password, mechanism)
        assert features.find(f"{{{BIND}}}bind") is not None
        await self.send(f"<iq xmlns='{CLIENT}' type='set' id='b1'><bind xmlns='{BIND}'>"
                        f"<resource>{resource}</resource></bind></iq>")
        result = await self.recv()
        assert result.get("type") == "result", ET.tostring(result)
        self.jid = result.find(f"{{{BIND}}}bind/{{{BIND}}}jid").text
        return self.jid

    async def authenticate(self, user: str, password: str, mechanism: str = "SCRAM-SHA-256") -> ET.Element:
        """SASL and the stream restart; returns the features after it."""
        features = await self.open()
        mechanisms = [m.text for m in features.iter(f"{{{SASL}}}mechanism")]
        assert mechanism in mechanisms, mechanisms
        scram, initial = sasl_steps(mechanism, user, password)
        await self.send(f"<auth xmlns='{SASL}' mechanism='{mechanism}'>{b64(initial)}</auth>")
        reply = await self.recv()
        if scram is not None:
            assert reply.tag == f"{{{SASL}}}challenge", ET.tostring(reply)
            final = scram.final(base64.b64decode(reply.text or ""))
            await self.send(f"<response xmlns='{SASL}'>{b64(final)}</response>")
            reply = await self.recv()
            assert reply.tag == f"{{{SASL}}}success", ET.tostring(reply)
            scram.verify_server(base64.b64decode(reply.text or ""))
        assert reply.tag == f"{{{SASL}}}success", ET.tostring(reply)
        return await self.open()

    async def wait_for(self, tag: str, timeout: float = 10) -> ET.Element:
        """The next message with ``tag`` (others are skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            element = await self.recv(max(0.1, deadline - loop.time()))
            if element.tag == tag:
                return element

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


class BoshClient:
    """XEP-0124/0206 over blocking urllib (call its methods through ``asyncio.to_thread``)."""

    def __init__(self, url: str, domain: str, ssl_context: ssl.SSLContext | None = None) -> None:
        self.url = url
        self.domain = domain
        self.ssl_context = ssl_context
        self.rid = 1000
        self.sid = ""
        self.jid = ""

    def post(self, body: str, timeout: float = 30) -> ET.Element:
        request = urllib.request.Request(self.url, data=body.encode("utf-8"), method="POST",
                                         headers={"Content-Type": "text/xml; charset=utf-8"})
        with urllib.request.urlopen(request, timeout=timeout, context=self.ssl_context) as response:
            return ET.fromstring(response.read())

    def body(self, payload: str = "", **attrs: str) -> ET.Element:
        self.rid += 1
        extra = "".join(f" {k.replace('_', ':')}='{v}'" for k, v in attrs.items())
        xml = (f"<body xmlns='{BOSH}' xmlns:xmpp='{XBOSH}' rid='{self.rid}' sid='{self.sid}'{extra}>"
               f"{payload}</body>")
        return self.post(xml)

    def create(self, wait: int = 5) -> ET.Element:
        self.rid += 1
        xml = (f"<body xmlns='{BOSH}' xmlns:xmpp='{XBOSH}' content='text/xml; charset=utf-8' "
               f"rid='{self.rid}' to='{self.domain}' wait='{wait}' hold='1' ver='1.11' "
               "xmpp:version='1.0' xml:lang='en'/>")
        reply = self.post(xml)
        self.sid = reply.get("sid", "")
        return reply

    def features(self, reply: ET.Element) -> ET.Element:
        while reply.find(f"{{{STREAMS}}}features") is None:
            reply = self.body()
        return reply.find(f"{{{STREAMS}}}features")

    def login(self, user: str, password: str, mechanism: str = "PLAIN", resource: str = "bosh") -> str:
        reply = self.create()
        assert reply.get("sid"), ET.tostring(reply)
        features = self.features(reply)
        mechanisms = [m.text for m in features.iter(f"{{{SASL}}}mechanism")]
        assert mechanism in mechanisms, mechanisms
        scram, initial = sasl_steps(mechanism, user, password)
        reply = self.body(f"<auth xmlns='{SASL}' mechanism='{mechanism}'>{b64(initial)}</auth>")
        while not list(reply):
            reply = self.body()
        if scram is not None:
            challenge = reply.find(f"{{{SASL}}}challenge")
            assert challenge is not None, ET.tostring(reply)
            final = scram.final(base64.b64decode(challenge.text or ""))
            reply = self.body(f"<response xmlns='{SASL}'>{b64(final)}</response>")
            while not list(reply):
                reply = self.body()
        assert reply.find(f"{{{SASL}}}success") is not None, ET.tostring(reply)
        reply = self.body(xmpp_restart="true", to=self.domain, xml_lang="en")
        features = self.features(reply)
        assert features.find(f"{{{BIND}}}bind") is not None, ET.tostring(features)
        reply = self.body(f"<iq xmlns='{CLIENT}' type='set' id='b1'><bind xmlns='{BIND}'>"
                          f"<resource>{resource}</resource></bind></iq>")
        while reply.find(f"{{{CLIENT}}}iq") is None:
            reply = self.body()
        self.jid = reply.find(f"{{{CLIENT}}}iq/{{{BIND}}}bind/{{{BIND}}}jid").text
        return self.jid
