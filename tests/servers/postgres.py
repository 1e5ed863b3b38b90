"""A throw-away PostgreSQL server for tests and benchmarks.

The cluster lives in a temporary directory under /tmp (``initdb`` there, the unix socket there
too), listens on 127.0.0.1 and a free port, and is stopped with ``pg_ctl`` at the end. The
system's own clusters in /etc/postgresql are never read or changed.

``initdb`` and ``postgres`` refuse to run as root, so when the tests run as root the server runs
as the ``postgres`` system user (``runuser -u postgres --``) and the directory is chowned to it.

The superuser ``lookup`` has a password (host connections use scram-sha-256), so a wrong password
can be tested; connect with :meth:`Postgres.url`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.servers import free_port

SUPERUSER = "lookup"
PASSWORD = "pg-test-secret"


class PostgresMissing(RuntimeError):
    pass


def find_bin_dir() -> str:
    """The directory of Debian's server binaries (initdb, pg_ctl), newest version first."""
    candidates = ["/usr/lib/postgresql/15/bin"] + sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    for directory in candidates:
        if os.access(os.path.join(directory, "initdb"), os.X_OK):
            return directory
    raise PostgresMissing(
        "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin: "
        "install the Debian package 'postgresql' (e.g. postgresql-15)"
    )


@dataclass
class Postgres:
    base: str
    bin_dir: str
    port: int = 0
    running: bool = False

    @property
    def data_dir(self) -> str:
        return os.path.join(self.base, "data")

    @property
    def log_path(self) -> str:
        return os.path.join(self.base, "postgres.log")

    def url(self, database: str = "postgres", password: str = PASSWORD, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} password={PASSWORD} dbname={database}"

    # life cycle -------------------------------------------------------------------------------
    @classmethod
    def create(cls, base: str | None = None) -> Postgres:
        """Initialize a cluster in a fresh directory (not started)."""
        bin_dir = find_bin_dir()
        base = base or tempfile.mkdtemp(prefix="pgtest-")
        os.chmod(base, 0o700)
        server = cls(base=base, bin_dir=bin_dir)
        password_file = os.path.join(base, "pwfile")
        with open(password_file, "w") as fh:
            fh.write(PASSWORD + "\n")
        server._chown()
        server._run(
            "initdb",
            "-D", server.data_dir,
            "--username", SUPERUSER,
            "--pwfile", password_file,
            "--auth-local", "trust",
            "--auth-host", "scram-sha-256",
            "--encoding", "UTF8",
            "--no-locale",
            "--no-sync",
            timeout=120,
        )
        os.unlink(password_file)
        return server

    def start(self, attempts: int = 3) -> None:
        last_error = ""
        for attempt in range(attempts):  # another process may grab the free port in between
            if attempt or not self.port:  # a restart keeps its port when it can
                self.port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.base} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            result = self._run(
                "pg_ctl", "-D", self.data_dir, "-l", self.log_path, "-o", options, "-w", "-t", "30", "start",
                timeout=60, check=False,
            )
            if result.returncode == 0:
                self.running = True
                return
            last_error = result.stdout + result.stderr + self._tail()
        raise RuntimeError(f"PostgreSQL did not start: {last_error[-2000:]}")

    def stop(self) -> None:
        if self.running:
            self._run(
                "pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "-t", "30", "stop", timeout=60, check=False
            )
            self.running = False

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    # helpers ----------------------------------------------------------------------------------
    def create_database(self, name: str) -> str:
        """Create (or recreate) database ``name`` and return its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _run(
        self, program: str, *args: str, timeout: float, check: bool = True
    ) -> subprocess.CompletedProcess:
        command = [os.path.join(self.bin_dir, program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=timeout, cwd=self.base
        )
        if check and result.returncode != 0:
            output = (result.stdout + result.stderr)[-2000:]
            raise RuntimeError(f"{program} failed ({result.returncode}): {output}")
        return result

    def _chown(self) -> None:
        if os.geteuid() != 0:
            return
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresMissing(
                "the 'postgres' system user does not exist: install the Debian package 'postgresql'"
            ) from None
        for root, dirs, files in os.walk(self.base):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, user.pw_uid, user.pw_gid)

    def _tail(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return fh.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A started server, stopped and deleted on exit. Use it in a module- or session-scoped
    fixture: ``with postgres_server() as pg: yield pg``."""
    server = Postgres.create()
    try:
        server.start()
        yield server
    finally:
        server.destroy()
