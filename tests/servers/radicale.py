"""A real Radicale CardDAV server on 127.0.0.1 for the tests and the benchmark.

Radicale runs in a child process with its own configuration, plain-text htpasswd file and
filesystem storage under a temporary directory, on a free port. Address books are created with an
extended MKCOL and filled with PUT, as a CardDAV client would.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import requests

from tests.servers import free_port

ADDRESSBOOK_MKCOL = """<?xml version="1.0" encoding="utf-8"?>
<D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav">
  <D:set><D:prop>
    <D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype>
    <D:displayname>{name}</D:displayname>
  </D:prop></D:set>
</D:mkcol>"""


# Runs Radicale like `python -m radicale --config FILE`, with fsync off: its option is private and
# cannot be set from a file. Only for throw-away servers (the benchmark's large address books).
_NO_FSYNC_LAUNCHER = (
    "import sys; from radicale import config, log, server; log.setup(); "
    "c = config.load([(sys.argv[1], False)]); "
    "c.update({'storage': {'_filesystem_fsync': 'False'}}, 'no-fsync', privileged=True); "
    "log.set_level(c.get('logging', 'level'), c.get('logging', 'backtrace_on_debug')); server.serve(c)"
)


class RadicaleServer:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager)."""

    def __init__(self, workdir: str | Path, users: dict[str, str] | None = None, fsync: bool = True):
        self.workdir = Path(workdir)
        self.fsync = fsync
        self.users = users or {"alice": "alice-secret"}
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> Self:
        if importlib.util.find_spec("radicale") is None:
            raise RuntimeError("Radicale is not installed: `pip install radicale` (PyPI package 'radicale')")
        self.workdir.mkdir(parents=True, exist_ok=True)
        htpasswd = self.workdir / "htpasswd"
        htpasswd.write_text("".join(f"{user}:{password}\n" for user, password in self.users.items()))
        self.port = free_port()
        config = self.workdir / "radicale.conf"
        config.write_text(
            f"""[server]
hosts = 127.0.0.1:{self.port}
max_content_length = 200000000

[auth]
type = htpasswd
htpasswd_filename = {htpasswd}
htpasswd_encryption = plain
delay = 0

[rights]
type = authenticated

[storage]
filesystem_folder = {self.workdir / "collections"}

[logging]
level = warning
mask_passwords = True
"""
        )
        log_file = open(self.workdir / "radicale.log", "wb")  # noqa: SIM115 - owned by the child
        env = {key: value for key, value in os.environ.items() if key != "PYTEST_VERSION"}
        if self.fsync:
            command = [sys.executable, "-m", "radicale", "--config", str(config)]
        else:
            command = [sys.executable, "-c", _NO_FSYNC_LAUNCHER, str(config)]
        self.process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Radicale exited at start-up:\n{self.log_tail()}")
            try:
                requests.get(self.base_url + "/.web/", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Radicale did not answer within {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / "radicale.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # client helpers ---------------------------------------------------------------------------
    def session(self, user: str | None = None) -> requests.Session:
        user = user or next(iter(self.users))
        session = requests.Session()
        session.auth = (user, self.users[user])
        return session

    def create_addressbook(self, name: str, user: str | None = None) -> str:
        """Create ``/<user>/<name>/`` as an address book and return its URL."""
        user = user or next(iter(self.users))
        session = self.session(user)
        # Radicale creates the principal collection on the user's first request to it.
        session.request("PROPFIND", f"{self.base_url}/{user}/", headers={"Depth": "0"}, timeout=10)
        url = f"{self.base_url}/{user}/{name}/"
        response = session.request(
            "MKCOL",
            url,
            data=ADDRESSBOOK_MKCOL.format(name=name).encode(),
            headers={"Content-Type": "application/xml; charset=utf-8"},
            timeout=10,
        )
        if response.status_code != 201:
            raise RuntimeError(f"MKCOL {url} answered {response.status_code}: {response.text[:300]}")
        return url

    def put_card(self, collection_url: str, resource: str, vcard: str, user: str | None = None) -> str:
        url = collection_url + resource
        response = self.session(user).put(
            url, data=vcard.encode(), headers={"Content-Type": "text/vcard; charset=utf-8"}, timeout=30
        )
        if response.status_code not in (201, 204):
            raise RuntimeError(f"PUT {url} answered {response.status_code}: {response.text[:300]}")
        return url

    def delete(self, url: str, user: str | None = None) -> None:
        response = self.session(user).delete(url, timeout=30)
        if response.status_code not in (200, 204):
            raise RuntimeError(f"DELETE {url} answered {response.status_code}")
