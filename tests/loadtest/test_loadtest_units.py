"""Pure parts of the load-test tool: histograms, the SCRAM client cache, the XML reader."""

from __future__ import annotations

import base64
import random

from tigasepy.auth.scram import ScramClient
from tigasepy.loadtest.runner import split
from tigasepy.loadtest.sasl import SaltedPasswordCache, ScramExchange, choose_mechanism
from tigasepy.loadtest.scenarios import RunSpec
from tigasepy.loadtest.client import ClientSettings
from tigasepy.loadtest.stats import Histogram
from tigasepy.loadtest.xmlstream import StreamReader


def test_histogram_percentiles_are_within_two_percent() -> None:
    """Log buckets 1% wide give percentiles close to the exact ones."""
    rng = random.Random(7)
    values = sorted(rng.lognormvariate(-5, 1) for _ in range(20000))
    h = Histogram()
    for v in values:
        h.add(v)
    for p in (50, 90, 99):
        exact = values[int(len(values) * p / 100) - 1]
        assert abs(h.percentile(p) - exact) / exact < 0.02


def test_histograms_merge_exactly() -> None:
    """Merging two workers' histograms equals one histogram of everything."""
    a, b, both = Histogram(), Histogram(), Histogram()
    for i in range(1, 500):
        (a if i % 2 else b).add(i / 1000)
        both.add(i / 1000)
    a.merge(Histogram.from_dict(b.to_dict()))
    assert (a.buckets, a.count, a.max) == (both.buckets, both.count, both.max)
    assert a.percentile(99) == both.percentile(99)


def test_scram_exchange_matches_tigasepy_scram_client() -> None:
    """The cached exchange sends exactly what ``tigasepy.auth.scram.ScramClient`` sends."""
    server_first = b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    cache = SaltedPasswordCache()
    for mechanism in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
        reference = ScramClient(mechanism, "user", "pencil", nonce="fyko+d2lbbFgONRv9qkxdawL")
        ours = ScramExchange(mechanism, "user", "pencil", cache, nonce="fyko+d2lbbFgONRv9qkxdawL")
        assert ours.first() == reference.first()
        assert ours.final(server_first) == reference.final(server_first)
    again = ScramExchange("SCRAM-SHA-1", "user", "pencil", cache, nonce="fyko+d2lbbFgONRv9qkxdawL")
    again.final(server_first)
    assert (cache.derivations, cache.hits) == (2, 1)


def test_rfc5802_server_signature_is_verified() -> None:
    """The RFC 5802 example exchange verifies; a wrong signature is refused."""
    ex = ScramExchange("SCRAM-SHA-1", "user", "pencil", SaltedPasswordCache(), nonce="fyko+d2lbbFgONRv9qkxdawL")
    ex.final(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
    ex.verify(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
    try:
        ex.verify(b"v=" + base64.b64encode(b"x" * 20))
    except Exception as e:
        assert "mismatch" in str(e)
    else:
        raise AssertionError("a wrong server signature was accepted")


def test_mechanism_choice_prefers_scram_and_plain_only_when_allowed() -> None:
    """SCRAM-SHA-256 over SHA-1; PLAIN only with --plain; a forced one must be offered."""
    offered = ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"]
    assert choose_mechanism(offered, None, False) == "SCRAM-SHA-256"
    assert choose_mechanism(["PLAIN"], None, False) is None
    assert choose_mechanism(["PLAIN"], None, True) == "PLAIN"
    assert choose_mechanism(offered, "SCRAM-SHA-512", False) is None


def test_stream_reader_builds_stanzas_across_chunks_and_restarts() -> None:
    """Stanzas split over chunks come out whole; a reset starts a new document."""
    headers, nodes = [], []
    reader = StreamReader(headers.append, nodes.append, lambda: None)
    data = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            b"xmlns:stream='http://etherx.jabber.org/streams' id='a'>"
            b"<message from='a@b/c'><body>hi</body><x xmlns='urn:tigasepy:loadtest' s='7'/></message>")
    for i in range(0, len(data), 7):
        reader.feed(data[i:i + 7])
    assert len(headers) == 1 and len(nodes) == 1
    msg = nodes[0]
    assert msg.qname == "jabber:client message" and msg.get("from") == "a@b/c"
    assert msg.child("urn:tigasepy:loadtest x").attrs["s"] == "7"
    assert msg.child("jabber:client body").text == "hi"
    reader.reset()
    reader.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
    assert len(headers) == 2


def test_split_keeps_pairs_whole_and_divides_rate() -> None:
    """Workers get whole pairs, shares of the rate, and only worker 0 samples the server."""
    spec = RunSpec(scenario="soak", settings=ClientSettings(), users=tuple(range(1, 11)), rate=100.0)
    parts = split(spec, 2)
    assert [p.users for p in parts] == [(1, 2, 3, 4), (5, 6, 7, 8, 9, 10)]
    assert sum(p.rate for p in parts) == 100.0
    assert [p.sample_server for p in parts] == [True, False]
