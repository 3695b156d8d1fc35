"""Entity Time (XEP-0202): the server's time, in UTC with its time zone offset."""

from __future__ import annotations

from datetime import datetime, timezone

from twisted.words.xish import domish
from zope.interface import implementer

from tigasepy.interfaces import IExtension, Protocol
from tigasepy.sm.events import StanzaEvent, Target
from tigasepy.sm.host import ExtensionHost

TIME = "urn:xmpp:time"


def tzo(moment: datetime) -> str:
    """The XEP-0082 time zone offset of an aware ``moment`` (``+02:00``, ``-05:30``, ``+00:00``)."""
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def utc_stamp(seconds: float) -> str:
    """The XEP-0082 UTC date-time for ``seconds`` since the epoch, with milliseconds."""
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@implementer(IExtension)
class EntityTime:
    """Answers ``urn:xmpp:time`` queries to the server's domain."""

    name = "time"
    protocols = (Protocol("XEP-0202", "2.0", "complete"),)
    config_type = None

    def __init__(self, config: None, host: ExtensionHost) -> None:
        self._host = host
        host.add_feature(TIME)
        host.on_iq(TIME, "time", self._time, targets=(Target.HOST,))

    def _time(self, event: StanzaEvent) -> domish.Element:
        now = self._host.clock.seconds()
        reply = domish.Element((TIME, "time"))
        reply.addElement("tzo", content=tzo(datetime.fromtimestamp(now).astimezone()))
        reply.addElement("utc", content=utc_stamp(now))
        return reply
