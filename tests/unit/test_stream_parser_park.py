"""StreamParser.park: an idle stream's expat parser is dropped and rebuilt on the next input."""

from __future__ import annotations

import pytest

from tigasepy.stream.parser import StreamParseError, StreamParser

STREAMS = "http://etherx.jabber.org/streams"
HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='" + STREAMS.encode()
          + b"' to='example.org' version='1.0' xml:lang='en'>")


class Recorder:
    def __init__(self, max_stanza_bytes: int = 10000) -> None:
        self.headers: list[dict[str, str]] = []
        self.elements = []
        self.ended = 0
        self.parser = StreamParser(self.headers.append, self.elements.append, self._end,
                                   max_stanza_bytes=max_stanza_bytes)
        self.parser.content_namespace = "jabber:client"

    def _end(self) -> None:
        self.ended += 1


def test_a_parked_parser_parses_the_next_stanzas_the_same():
    r = Recorder()
    r.parser.feed(HEADER + b"<presence/>\n")
    assert r.parser.park() and r.parser.parked
    r.parser.feed(b"<message to='a@b'><body>hi</body><x xmlns='urn:x'><y/></x></message>")
    assert not r.parser.parked
    assert len(r.headers) == 1
    message = r.elements[-1]
    assert message.uri is None and message.name == "message" and message["to"] == "a@b"
    assert str(message.body) == "hi" and message.body.uri is None
    x = next(message.elements("urn:x", "x"))
    assert next(x.elements()).uri == "urn:x"
    assert r.parser.park()
    r.parser.feed(b"</stream:stream>")
    assert r.ended == 1


def test_prefixes_of_the_header_still_apply_after_parking():
    r = Recorder()
    r.parser.feed(b"<s:stream xmlns:s='" + STREAMS.encode() + b"' xmlns='jabber:client' xmlns:f='urn:f'>")
    assert r.parser.park()
    r.parser.feed(b"<message><f:thing a='1'/></message>")
    thing = next(r.elements[-1].elements())
    assert (thing.uri, thing.name, thing["a"]) == ("urn:f", "thing", "1")
    assert r.parser.park()
    r.parser.feed(b"</s:stream>")
    assert r.ended == 1


def test_no_parking_inside_a_stanza_or_a_partial_tag():
    r = Recorder()
    assert not r.parser.park()                      # before the header
    r.parser.feed(HEADER + b"<message><body>")
    assert not r.parser.park()
    r.parser.feed(b"x</body></message><presence a='>")
    assert not r.parser.park()                      # a tag cut in the middle
    r.parser.feed(b"'/>")
    assert r.parser.park()
    assert [e.name for e in r.elements] == ["message", "presence"]
    assert r.elements[-1]["a"] == ">"


@pytest.mark.parametrize("data, condition", [
    (b"<message><body>" + b"x" * 300 + b"</body></message>", "policy-violation"),
    (b"text", "bad-format"),
    (b"<!-- no -->", "restricted-xml"),
])
def test_limits_and_rules_hold_after_parking(data: bytes, condition: str):
    r = Recorder(max_stanza_bytes=200)
    r.parser.feed(HEADER)
    assert r.parser.park()
    with pytest.raises(StreamParseError) as e:
        r.parser.feed(data)
    assert e.value.condition == condition


def test_reset_after_parking_wants_a_new_header():
    r = Recorder()
    r.parser.feed(HEADER)
    assert r.parser.park()
    r.parser.reset()
    assert not r.parser.parked
    r.parser.feed(HEADER + b"<iq type='get' id='1'/>")
    assert len(r.headers) == 2 and r.elements[-1].name == "iq"

