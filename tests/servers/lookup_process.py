"""Start the service itself in a real process (gunicorn as the Procfile or the Dockerfile runs it)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def procfile_command(port: int | None = None) -> list[str]:
    """The Procfile's web command, run with this environment's gunicorn; with ``port``, bound to
    127.0.0.1 (on the command line the bind wins over the configuration's 0.0.0.0)."""
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    command = shlex.split(line[4:])
    command[0] = str(Path(sys.executable).parent / command[0])
    return command + (["--bind", f"127.0.0.1:{port}"] if port is not None else [])


class ServiceProcess:
    """A started service: ``url`` is its root on 127.0.0.1; ``stop()`` ends its whole process group."""

    def __init__(self, process: subprocess.Popen, url: str, log: Path):
        self.process = process
        self.url = url
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def start_service(command: Sequence[str], port: int, env: Mapping[str, str], cwd: str | Path, log: Path,
                  limit_s: float = 30.0, **popen: object) -> ServiceProcess:
    """Run ``command`` and wait (at most ``limit_s``) until ``/healthz`` answers on ``port``."""
    handle = open(log, "ab")  # noqa: SIM115 - the child keeps its own copy
    process = subprocess.Popen(list(command), cwd=cwd, env=dict(env), stdout=handle, stderr=handle,
                               start_new_session=True, **popen)  # type: ignore[call-overload]
    handle.close()
    service = ServiceProcess(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the service exited with {process.returncode}:\n{service.output()}")
        try:
            with urllib.request.urlopen(f"{service.url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return service
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    service.stop()
    raise AssertionError(f"the service did not answer /healthz within {limit_s}s:\n{service.output()}")
