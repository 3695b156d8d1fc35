"""A private ejabberd (Debian's package) for migration tests: own config, spool and node name.

Nothing of the system's ejabberd is used: the node is ``tigasepyNNNN@localhost`` with its
configuration, Mnesia spool and logs in a temporary folder, no listeners (``ejabberdctl``
reaches it over Erlang distribution on 127.0.0.1), and it is stopped by ``stop()``. The
package's ``ejabberdctl`` runs the node as the ``ejabberd`` user (from root through ``su``),
so the folder is handed to that user.

``populate()`` creates the sample data of ``tests/fixtures/xep0227/ejabberd-23.01``:
plain.test keeps plaintext passwords, scram.test SCRAM-SHA-1 keys (``host_config``).
"""

from __future__ import annotations

import os
import pwd
import secrets
import signal
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

EJABBERDCTL = "/usr/sbin/ejabberdctl"
USER = "ejabberd"

CONFIG = """\
hosts:
  - "plain.test"
  - "scram.test"
loglevel: warning
auth_method: internal
auth_password_format: plain
host_config:
  "scram.test":
    auth_password_format: scram
listen: []
acl:
  admin:
    user: "admin@plain.test"
access_rules:
  local:
    allow: all
api_permissions:
  "console commands":
    from: [ejabberd_ctl]
    who: all
    what: "*"
modules:
  mod_roster: {}
  mod_vcard: {}
  mod_private: {}
  mod_offline: {}
  mod_privacy: {}
  mod_blocking: {}
  mod_mam:
    default: always
  mod_last: {}
  mod_admin_extra: {}
"""

#: The accounts ``populate`` creates, with their passwords.
PASSWORDS = {"juliet@plain.test": "jul1et-pw", "romeo@plain.test": "r0meo pw", "nurse@scram.test": "nur$e-pw"}


def unavailable_reason() -> str | None:
    """Why no private ejabberd can run here, or None."""
    if not os.path.exists(EJABBERDCTL):
        return f"ejabberd is not installed ({EJABBERDCTL} missing; Debian package 'ejabberd')"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"ejabberd is installed but its user {USER!r} is missing"
    if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != USER:
        return "the ejabberd package's ejabberdctl runs only as root or as the ejabberd user"
    return None


class PrivateEjabberd:
    """One private ejabberd node; ``start()``, ``ctl(...)``, ``export(folder)``, ``stop()``."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="tigasepy-ejabberd-"))
        self.node = f"tigasepy{os.getpid()}{secrets.token_hex(3)}@localhost"
        (self.folder / "ejabberd.yml").write_text(CONFIG)
        (self.folder / "ejabberdctl.cfg").write_text(
            'ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"\n'
            f"EJABBERD_PID_PATH={self.folder}/ejabberd.pid\n"
            f"EJABBERD_CONFIG_PATH={self.folder}/ejabberd.yml\n"
            "INET_DIST_INTERFACE=127.0.0.1\n")
        for name in ("spool", "logs", "export"):
            (self.folder / name).mkdir()
        entry = pwd.getpwnam(USER)
        for path in [self.folder, *self.folder.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        self.started = False

    def _command(self, *args: str) -> list[str]:
        f = self.folder
        return [EJABBERDCTL, "--config-dir", str(f), "--config", str(f / "ejabberd.yml"),
                "--ctl-config", str(f / "ejabberdctl.cfg"), "--logs", str(f / "logs"),
                "--spool", str(f / "spool"), "--node", self.node, *args]

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """Run one ``ejabberdctl`` command against the node; returns its output."""
        done = subprocess.run(self._command(*args), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"ejabberdctl {' '.join(args[:2])} failed ({done.returncode}): "
                               f"{(done.stdout + done.stderr).strip()[-500:]}")
        return done.stdout

    def start(self, timeout: float = 90) -> None:
        self.ctl("start")
        self.started = True
        try:
            self.ctl("started", timeout=timeout)
        except (RuntimeError, subprocess.TimeoutExpired):
            errors = (self.folder / "logs" / "error.log")
            detail = errors.read_text()[-800:] if errors.exists() else "(no error.log)"
            raise RuntimeError(f"the private ejabberd did not start: {detail}") from None

    def populate(self) -> None:
        """The sample data: accounts, rosters, a vCard, private storage, a privacy list,
        a pending subscription request and two offline messages."""
        def parallel(commands: list[tuple[str, ...]]) -> None:
            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(lambda args: self.ctl(*args), commands))

        parallel([("register", *jid.split("@"), password) for jid, password in PASSWORDS.items()])
        parallel([
            ("add_rosteritem", "juliet", "plain.test", "romeo", "plain.test", "Romeo", "Friends;Family", "both"),
            ("add_rosteritem", "juliet", "plain.test", "nurse", "scram.test", "The Nurse", "Household", "to"),
            ("add_rosteritem", "romeo", "plain.test", "juliet", "plain.test", "Juliet", "Friends", "both"),
            ("add_rosteritem", "nurse", "scram.test", "juliet", "plain.test", "Juliet", "", "from"),
            ("set_vcard", "juliet", "plain.test", "FN", "Juliet Capulet"),
            ("private_set", "juliet", "plain.test",
             '<exodus xmlns="exodus:prefs"><defaultnick>Jules</defaultnick></exodus>'),
            ("privacy_set", "juliet", "plain.test",
             "<query xmlns='jabber:iq:privacy'><list name='public'><item type='jid' value='tybalt@example.com'"
             " action='deny' order='1'/><item action='allow' order='2'/></list></query>"),
            ("send_stanza", "romeo@plain.test", "nurse@scram.test",
             "<presence type='subscribe' xmlns='jabber:client'/>"),
        ])
        # One after the other: offline messages keep their order.
        self.ctl("set_vcard2", "juliet", "plain.test", "N", "GIVEN", "Juliet")
        self.ctl("send_message", "chat", "romeo@plain.test/orchard", "juliet@plain.test", "",
                 "Neither, fair saint, if either thee dislike.")
        self.ctl("send_message", "normal", "nurse@scram.test", "juliet@plain.test", "Hello", "Your mother calls")

    def export(self) -> Path:
        """``ejabberdctl export_piefxis``; returns the folder holding the files."""
        out = self.folder / "export"
        self.ctl("export_piefxis", str(out))
        return out

    def _kill(self) -> None:
        """End the node's VM by the id in its pid file (it did not stop when asked)."""
        try:
            os.kill(int((self.folder / "ejabberd.pid").read_text().strip()), signal.SIGKILL)
        except (OSError, ValueError):
            pass

    def stop(self) -> None:
        if self.started:
            try:
                self.ctl("stop", timeout=30)
                self.ctl("stopped", timeout=30)
            except (RuntimeError, subprocess.TimeoutExpired):
                self._kill()
            self.started = False
        shutil.rmtree(self.folder, ignore_errors=True)
