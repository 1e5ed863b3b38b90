"""A throw-away OpenLDAP slapd for tests and benchmarks.

Everything lives in a temporary directory: a generated ``slapd.conf`` (mdb database, suffix
``dc=example,dc=org``), the database files and the pid file. The system's own configuration in
/etc/ldap is never read or changed; only the schema files in /etc/ldap/schema are included.

A small extra schema adds a few Active Directory attributes (``company``, ``ipPhone``,
``otherTelephone``, ``otherMobile``, ``whenChanged``, ``objectGUID``, with Microsoft's OIDs and
AD-like matching: case-insensitive strings, no space-ignoring telephone matching) through the
auxiliary class ``adLikePerson``, so AD-style attribute maps can be tested against slapd.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

from tests.servers import free_port

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA_DIR = "/etc/ldap/schema"
MODULE_DIR = "/usr/lib/ldap"

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "root-secret"
READER_DN = f"cn=lookup,{SUFFIX}"
READER_PW = "reader-secret"
PEOPLE_DN = f"ou=people,{SUFFIX}"

# OIDs of the AD attributes; the auxiliary class uses the documentation arc of RFC 5612.
AD_LIKE_SCHEMA = """
attributetype ( 1.2.840.113556.1.2.146 NAME 'company'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.721 NAME 'ipPhone'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.2.18 NAME 'otherTelephone'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 1.2.840.113556.1.4.647 NAME 'otherMobile'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 1.2.840.113556.1.2.3 NAME 'whenChanged'
    EQUALITY generalizedTimeMatch ORDERING generalizedTimeOrderingMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.24 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.2 NAME 'objectGUID'
    EQUALITY octetStringMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.32473.1.2.1 NAME 'adLikePerson' SUP top AUXILIARY
    MAY ( company $ ipPhone $ otherTelephone $ otherMobile $ whenChanged $ objectGUID ) )
"""

CONFIG = """\
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
include {base}/ad-like.schema
pidfile {base}/slapd.pid
argsfile {base}/slapd.args
modulepath {modules}
moduleload back_mdb
sizelimit {size_limit}
{tls}

database mdb
maxsize 2147483648
suffix "{suffix}"
rootdn "{root_dn}"
rootpw {root_pw}
directory {base}/db
index objectClass eq
index entryUUID eq
index modifyTimestamp eq
index telephoneNumber,mobile,homePhone eq,sub
index ipPhone,otherTelephone,otherMobile eq,sub
# The lookup account may page through the whole directory (a mirror sync).
limits dn.exact="{reader_dn}" size.prtotal=unlimited
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
"""


class SlapdMissing(RuntimeError):
    pass


@dataclass
class Slapd:
    """One slapd process. ``url`` is ``ldap://127.0.0.1:<port>``."""

    base: str
    port: int = 0
    process: subprocess.Popen | None = None
    log_path: str = ""
    tls: bool = False
    tls_port: int = 0
    _log = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    @property
    def cert_path(self) -> str:
        return os.path.join(self.base, "cert.pem")

    @property
    def conf(self) -> str:
        return os.path.join(self.base, "slapd.conf")

    @classmethod
    def create(cls, base: str | None = None, size_limit: int = 500, tls: bool = False) -> Slapd:
        """Write the configuration and an empty database (not started).

        ``tls``: make a self-signed certificate for 127.0.0.1 (``cert_path``, the client's CA file),
        listen on ``ldaps_url`` too and accept StartTLS on ``url``."""
        for binary, package in ((SLAPD, "slapd"), (SLAPADD, "slapd")):
            if not os.access(binary, os.X_OK):
                raise SlapdMissing(f"{binary} not found: install the Debian package {package!r}")
        if not os.path.exists(os.path.join(SCHEMA_DIR, "inetorgperson.schema")):
            raise SlapdMissing(
                f"{SCHEMA_DIR}/inetorgperson.schema not found: install the Debian package 'slapd'"
            )
        base = base or tempfile.mkdtemp(prefix="slapd-test-")
        os.makedirs(os.path.join(base, "db"), exist_ok=True)
        with open(os.path.join(base, "ad-like.schema"), "w") as fh:
            fh.write(AD_LIKE_SCHEMA)
        tls_lines = ""
        if tls:
            _self_signed(base)
            tls_lines = f"TLSCertificateFile {base}/cert.pem\nTLSCertificateKeyFile {base}/key.pem"
        with open(os.path.join(base, "slapd.conf"), "w") as fh:
            fh.write(
                CONFIG.format(
                    schema=SCHEMA_DIR,
                    modules=MODULE_DIR,
                    base=base,
                    suffix=SUFFIX,
                    root_dn=ROOT_DN,
                    root_pw=ROOT_PW,
                    reader_dn=READER_DN,
                    size_limit=size_limit,
                    tls=tls_lines,
                )
            )
        return cls(base=base, log_path=os.path.join(base, "slapd.log"), tls=tls)

    def slapadd(self, ldif: str, quick: bool = True) -> None:
        """Load entries offline into the (stopped) database: far faster than LDAP adds."""
        if self.process is not None:
            raise RuntimeError("slapadd needs slapd stopped")
        path = os.path.join(self.base, "load.ldif")
        with open(path, "w") as fh:
            fh.write(ldif)
        command = [SLAPADD, "-f", self.conf, "-l", path] + (["-q"] if quick else [])
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
        os.unlink(path)
        if result.returncode != 0:
            raise RuntimeError(f"slapadd failed ({result.returncode}): {result.stderr[-2000:]}")

    def start(self, timeout: float = 15.0) -> None:
        self.port = self.port or free_port()
        listen = f"ldap://127.0.0.1:{self.port}/"
        if self.tls:
            self.tls_port = self.tls_port or free_port()
            listen += f" ldaps://127.0.0.1:{self.tls_port}/"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        # `-d 0` keeps slapd in the foreground (no fork), so the Popen handle is the server.
        self.process = subprocess.Popen(
            [SLAPD, "-f", self.conf, "-h", listen, "-d", "0"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.process.returncode}: {self._tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"slapd did not listen on port {self.port} within {timeout}s: {self._tail()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def _tail(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return fh.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""


def _self_signed(base: str) -> None:
    if not shutil.which("openssl"):
        raise SlapdMissing("openssl not found: install the Debian package 'openssl'")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            f"{base}/key.pem",
            "-out",
            f"{base}/cert.pem",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def base_ldif() -> str:
    """The suffix, the people OU and the lookup (reader) account."""
    return f"""dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: {PEOPLE_DN}
objectClass: organizationalUnit
ou: people

dn: {READER_DN}
objectClass: simpleSecurityObject
objectClass: organizationalRole
cn: lookup
userPassword: {READER_PW}

"""


def person_ldif(uid: str, cn: str, sn: str, **attributes: str | list[str]) -> str:
    """An inetOrgPerson entry under ou=people; ``attributes`` values may be lists."""
    lines = [
        f"dn: uid={uid},{PEOPLE_DN}",
        "objectClass: inetOrgPerson",
        f"uid: {uid}",
        f"cn: {cn}",
        f"sn: {sn}",
    ]
    for name, value in attributes.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{name}: {item}")
    return "\n".join(lines) + "\n\n"
