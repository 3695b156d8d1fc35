"""Dialback keys (XEP-0185) and elements (XEP-0220)."""

from __future__ import annotations

import stat
from pathlib import Path

from tigasepy.s2s import dialback


def test_key_matches_the_xep_0185_known_answer() -> None:
    """XEP-0185 section 3: secret s3cr3tf0rd14lb4ck, xmpp.example.com receiving,
    example.org originating, stream D60000229F."""
    key = dialback.dialback_key("s3cr3tf0rd14lb4ck", "xmpp.example.com", "example.org", "D60000229F")
    assert key == "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643"
    assert dialback.dialback_key(b"s3cr3tf0rd14lb4ck", "xmpp.example.com", "example.org", "D60000229F") == key


def test_key_depends_on_every_input() -> None:
    base = ("secret", "r.example", "o.example", "id1")
    key = dialback.dialback_key(*base)
    for index, other in enumerate(("secret2", "x.example", "x.example", "id2")):
        changed = list(base)
        changed[index] = other
        assert dialback.dialback_key(*changed) != key
    # the space separator keeps "ab c" and "a bc" apart
    assert dialback.dialback_key("s", "ab", "c", "1") != dialback.dialback_key("s", "a", "bc", "1")


def test_keys_match_ignores_surrounding_whitespace_only() -> None:
    key = dialback.dialback_key("s", "r", "o", "i")
    assert dialback.keys_match(key, f"\n  {key}  ")
    assert not dialback.keys_match(key, key[:-1] + "0")
    assert not dialback.keys_match(key, "")


def test_secret_is_created_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "secret"
    first = dialback.load_or_create_dialback_secret(path)
    assert len(first) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert dialback.load_or_create_dialback_secret(path) == first


def test_a_too_short_secret_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"short")
    assert len(dialback.load_or_create_dialback_secret(path)) >= 32


def _parse(data: bytes):
    wrapped = (b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
               b"xmlns:db='jabber:server:dialback'>" + data)
    from tigasepy.stream.parser import StreamParser

    out = []
    parser = StreamParser(lambda h: None, out.append, lambda: None, max_stanza_bytes=10000)
    parser.content_namespace = "jabber:server"
    parser.feed(wrapped)
    [element] = out
    return element


def test_elements_use_the_db_prefix_and_parse_back() -> None:
    """XEP-0220 section 2: dialback elements carry the prefix declared on our header."""
    raw = dialback.result("a.example", "b.example", key="abc")
    assert raw.startswith(b"<db:result ")
    element = _parse(raw)
    assert (element.uri, element.name, element["from"], element["to"], str(element)) == (
        dialback.NS_DIALBACK, "result", "a.example", "b.example", "abc")
    verify = _parse(dialback.verify("a.example", "b.example", "s'1", type="valid"))
    assert (verify.name, verify["id"], verify["type"]) == ("verify", "s'1", "valid")


def test_error_answers_carry_a_stanza_error_condition() -> None:
    element = _parse(dialback.result("a.example", "b.example", type="error", condition="item-not-found"))
    assert element["type"] == "error"
    assert dialback.error_condition(element) == "item-not-found"
    assert dialback.error_condition(_parse(dialback.result("a", "b", type="invalid"))) is None
