"""XEP-0363 store: file names, secret, quota accounting and expiry on an injected clock."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from twisted.internet.task import Clock

from tigasepy.http.framing import fix_element
from tigasepy.http.upload import UploadStore, clean_filename, load_secret


def test_clean_filename() -> None:
    assert clean_filename("../../etc/passwd") == "passwd"
    assert clean_filename("C:\\x\\y.txt") == "y.txt"
    assert clean_filename("a\"b;c'\n.txt") == "abc.txt"
    assert clean_filename("..") == "file"
    assert clean_filename(".hidden") == "hidden"


def test_secret_is_owner_only_and_stable(tmp_path: Path) -> None:
    key = load_secret(tmp_path / "upload.secret")
    assert len(key) == 32 and load_secret(tmp_path / "upload.secret") == key
    assert stat.S_IMODE(os.stat(tmp_path / "upload.secret").st_mode) == 0o600


def test_quota_and_expiry(tmp_path: Path) -> None:
    clock = Clock()
    store = UploadStore(tmp_path / "up", b"k" * 32, clock, expiry_days=1)
    slot = "a" * 32
    store.reserved[slot] = ("alice@x", 5, 300.0)
    assert store.used("alice@x") == 5
    assert store.store(slot, io.BytesIO(b"hello"), {"filename": "f", "size": 5, "content_type": "text/plain",
                                                      "owner": "alice@x", "created": 0.0})
    assert not store.store(slot, io.BytesIO(b"again"), {"owner": "alice@x", "size": 5})
    assert store.used("alice@x") == 5
    assert UploadStore(tmp_path / "up", b"k" * 32, clock, 1).usage == {"alice@x": 5}
    clock.advance(86399)
    assert store.sweep() == 0
    clock.advance(2)
    assert store.sweep() == 1
    assert store.used("alice@x") == 0 and store.meta(slot) is None
    assert store.meta("../x") is None


def test_framing_fixes_elements() -> None:
    assert fix_element(b"<message to='a'><body/></message>") == \
        b"<message xmlns='jabber:client' to='a'><body/></message>"
    assert fix_element(b"<iq/>") == b"<iq xmlns='jabber:client'/>"
    assert fix_element(b"<presence xmlns='jabber:client'/>") == b"<presence xmlns='jabber:client'/>"
    assert fix_element(b"<stream:error><x/></stream:error>") == \
        b"<stream:error xmlns:stream='http://etherx.jabber.org/streams'><x/></stream:error>"
    assert fix_element(b"<r xmlns='urn:xmpp:sm:3'/>") == b"<r xmlns='urn:xmpp:sm:3'/>"
