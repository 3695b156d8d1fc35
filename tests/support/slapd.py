"""A private OpenLDAP ``slapd`` for tests: its own config, data and TLS, on 127.0.0.1.

Nothing of the Debian package's own instance is used (no /etc/ldap/slapd.d, no
/var/lib/ldap): ``Slapd`` writes a ``slapd.conf`` (mdb backend, core/cosine/
inetorgperson/nis schemas) into a temporary directory, makes a CA and a server
certificate (for ``localhost`` only, so ``127.0.0.1`` is a name mismatch) with ``cryptography``, starts ``slapd``
in the foreground on a free port for ``ldap://`` (StartTLS) and one for ``ldaps://``,
seeds the directory with ``ldapadd`` and stops it at the end. ``stop()`` / ``start()``
keep the ports and data, to play a directory outage.

Directory layout (suffix ``dc=example,dc=org``, passwords are ``{SSHA}`` hashes)::

    ou=people     uid=alice, uid=bob, uid=x\\,y (a comma in the uid), uid=q(1)*, uid=carol
    ou=services   cn=xmpp (the search-mode service account)
    ou=groups     cn=xmpp-users (groupOfNames: alice, x\\,y, q(1)*, carol)

bob exists but is not in ``cn=xmpp-users``; carol has ``description: disabled``.
Anonymous users can only bind; an authenticated one reads everything but passwords.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-secret"
SERVICE_DN = f"cn=xmpp,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "service-secret"
PEOPLE = f"ou=people,{SUFFIX}"
GROUP_DN = f"cn=xmpp-users,ou=groups,{SUFFIX}"

#: uid -> password of the seeded people.
USERS = {"alice": "alice-ldap-pw", "bob": "bob-ldap-pw", "x,y": "comma-pw", "q(1)*": "paren-pw",
         "carol": "carol-ldap-pw"}
#: uids in ``cn=xmpp-users``.
GROUP_MEMBERS = ("alice", "x,y", "q(1)*", "carol")
#: uids whose entry has ``description: disabled``.
DISABLED = ("carol",)

SCHEMAS = ("core", "cosine", "inetorgperson", "nis")


def binaries_available() -> str | None:
    """None when slapd and ldapadd are installed, else what is missing."""
    missing = [name for name, path in (("slapd", "/usr/sbin/slapd"), ("ldapadd", None))
               if not (shutil.which(name) or (path and os.path.exists(path)))]
    schema_dir = Path("/etc/ldap/schema")
    if not all((schema_dir / f"{s}.schema").exists() for s in SCHEMAS):
        missing.append("/etc/ldap/schema (slapd's schemas)")
    return ", ".join(missing) or None


def _slapd_binary() -> str:
    return shutil.which("slapd") or "/usr/sbin/slapd"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ssha(password: str) -> str:
    """An OpenLDAP ``{SSHA}`` userPassword value."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def dn_value(text: str) -> str:
    """RFC 4514 escaping for the test data (independent of the code under test)."""
    out = "".join("\\" + c if c in ',+"\\<>;=' else c for c in text)
    if out.startswith(("#", " ")):
        out = "\\" + out
    return out


def user_dn(uid: str) -> str:
    """The DN of a seeded person."""
    return f"uid={dn_value(uid)},{PEOPLE}"


@dataclass
class TlsFiles:
    """PEM files of the test CA and the server certificate it signed."""

    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that signed nothing here: verification against it fails


def make_tls(directory: Path, names: tuple[str, ...] = ("localhost",),
             ips: tuple[str, ...] = ()) -> TlsFiles:
    """A CA and a server certificate for ``names``/``ips`` (cryptography, EC P-256)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def ca(common_name: str):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return key, cert

    ca_key, ca_cert = ca("tigasepy test LDAP CA")
    _other_key, other_cert = ca("tigasepy unrelated CA")
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "ldap")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    files = TlsFiles(ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key",
                     other_ca=directory / "other-ca.pem")
    files.ca.write_bytes(ca_cert.public_bytes(pem))
    files.other_ca.write_bytes(other_cert.public_bytes(pem))
    files.cert.write_bytes(cert.public_bytes(pem))
    files.key.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    files.key.chmod(0o600)
    return files


def seed_ldif() -> str:
    """The directory's entries (LDIF)."""
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n",
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: xmpp\nuserPassword: {ssha(SERVICE_PASSWORD)}\n",
    ]
    for uid, password in USERS.items():
        lines = [f"dn: {user_dn(uid)}", "objectClass: inetOrgPerson", f"uid: {uid}", f"cn: {uid}",
                 f"sn: {uid}", f"userPassword: {ssha(password)}"]
        if uid in DISABLED:
            lines.append("description: disabled")
        entries.append("\n".join(lines) + "\n")
    members = "".join(f"member: {user_dn(uid)}\n" for uid in GROUP_MEMBERS)
    entries.append(f"dn: {GROUP_DN}\nobjectClass: groupOfNames\ncn: xmpp-users\n{members}")
    return "\n".join(entries)


def slapd_conf(directory: Path, tls: TlsFiles) -> str:
    """A slapd.conf for an instance living entirely in ``directory``."""
    includes = "".join(f"include /etc/ldap/schema/{s}.schema\n" for s in SCHEMAS)
    module_path = "/usr/lib/ldap"
    modules = f"modulepath {module_path}\nmoduleload back_mdb\n" if Path(module_path, "back_mdb.la").exists() \
        or Path(module_path, "back_mdb.so").exists() else ""
    return f"""\
{includes}{modules}pidfile {directory}/slapd.pid
argsfile {directory}/slapd.args
TLSCACertificateFile {tls.ca}
TLSCertificateFile {tls.cert}
TLSCertificateKeyFile {tls.key}
loglevel none
database mdb
maxsize 33554432
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PASSWORD}
directory {directory}/data
access to attrs=userPassword
    by anonymous auth
    by * none
access to *
    by users read
    by * none
"""


@dataclass
class Slapd:
    """One private slapd; ``url`` speaks LDAP (StartTLS available), ``ldaps_url`` TLS from the start."""

    directory: Path
    port: int = field(default_factory=_free_port)
    ldaps_port: int = field(default_factory=_free_port)
    tls: TlsFiles | None = None
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """StartTLS-capable LDAP, by the certificate's name."""
        return f"ldap://localhost:{self.port}"

    @property
    def ldaps_url(self) -> str:
        """LDAP over TLS, by the certificate's name."""
        return f"ldaps://localhost:{self.ldaps_port}"

    @property
    def ip_url(self) -> str:
        """LDAP by address: TLS on it fails the host-name check (the certificate names localhost)."""
        return f"ldap://127.0.0.1:{self.port}"

    def setup(self) -> None:
        """Write the config, the certificates and the seeded database (slapd not running)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "data").mkdir(exist_ok=True)
        self.tls = make_tls(self.directory)
        (self.directory / "slapd.conf").write_text(slapd_conf(self.directory, self.tls))
        (self.directory / "seed.ldif").write_text(seed_ldif())

    def start(self, timeout: float = 10.0) -> None:
        """Start slapd (foreground child process) and wait until it answers."""
        log = open(self.directory / "slapd.log", "ab")
        listen = f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.ldaps_port}/"
        self.process = subprocess.Popen(
            [_slapd_binary(), "-d", "0", "-f", str(self.directory / "slapd.conf"), "-h", listen],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.process.returncode}: "
                                   f"{(self.directory / 'slapd.log').read_text(errors='replace')[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2), \
                        socket.create_connection(("127.0.0.1", self.ldaps_port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"slapd did not listen on {self.port} within {timeout}s")

    def seed(self) -> None:
        """Add the entries of ``seed_ldif`` with ldapadd (as the root DN)."""
        subprocess.run(["ldapadd", "-x", "-H", self.ip_url, "-D", ROOT_DN, "-w", ROOT_PASSWORD,
                        "-f", str(self.directory / "seed.ldif")],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=30)

    def ldapmodify(self, ldif: str) -> None:
        """Apply an LDIF change (as the root DN)."""
        subprocess.run(["ldapmodify", "-x", "-H", self.ip_url, "-D", ROOT_DN, "-w", ROOT_PASSWORD],
                       input=ldif.encode(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=30)

    def stop(self) -> None:
        """Stop slapd (SIGTERM, then SIGKILL after 5 s); data and ports stay."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def start_slapd(directory: Path) -> Slapd:
    """A set-up, started and seeded slapd in ``directory``."""
    server = Slapd(directory)
    server.setup()
    server.start()
    try:
        server.seed()
    except BaseException:
        server.stop()
        raise
    return server
