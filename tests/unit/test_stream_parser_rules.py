"""StreamParser rules that end a stream."""

from __future__ import annotations

import pytest

from tigasepy.stream.parser import StreamParseError, StreamParser

HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>")


@pytest.mark.parametrize("data", [b"text", b"text<a/>", b"<a/>text "])
def test_text_between_stanzas_is_bad_format(data):
    # Replacing expat's text handler (to stop it) flushes buffered text into the handler
    # again: this used to recurse until RecursionError (an internal-server-error on c2s).
    parser = StreamParser(lambda header: None, lambda element: None, lambda: None, max_stanza_bytes=10000)
    parser.content_namespace = "jabber:client"
    with pytest.raises(StreamParseError) as e:
        parser.feed(HEADER + data)
    assert e.value.condition == "bad-format"
