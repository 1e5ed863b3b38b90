"""Deployment files: the Dockerfile, .dockerignore and app.json.

Docker cannot run on the development machine (no daemon, and no registry for the base image), so
the image is checked another way: the Dockerfile is parsed, the build context is assembled as
.dockerignore filters it, its pip RUN line installs requirements.txt into a fresh virtual
environment of the system's Python 3.11 (the base image's Python is 3.11 too), and its CMD runs
there as the Dockerfile's non-root user; then the README's requests and the HEALTHCHECK command
are run against it. Building the environment takes about 40 seconds (downloads from PyPI).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest

from tests.servers import free_port
from tests.servers.lookup_process import start_service

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "docker-test-token-0123456789"


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def _all(keyword: str) -> list[str]:
    return [args for kw, args in dockerfile() if kw == keyword]


def _env() -> dict[str, str]:
    values: dict[str, str] = {}
    for args in _all("ENV"):
        for item in shlex.split(args):
            name, _, value = item.partition("=")
            values[name] = value
    return values


def _procfile_web() -> list[str]:
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    return shlex.split(line[4:])


def _healthcheck() -> list[str]:
    (args,) = _all("HEALTHCHECK")
    command = args[args.index("CMD ") + 4:]
    return json.loads(command)


def test_the_image_is_slim_python_3_11_and_runs_the_procfile_command_as_non_root():
    (base,) = _all("FROM")
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), base
    assert json.loads(_all("CMD")[-1]) == _procfile_web()
    user = _all("USER")[-1].split(":")[0]
    assert user not in ("root", "0", "")
    assert _env().get("PORT") == "8000" and "8000" in _all("EXPOSE")
    instructions = dockerfile()
    copy_requirements = instructions.index(("COPY", "requirements.txt constraints.txt ./"))
    install = next(i for i, (kw, args) in enumerate(instructions) if kw == "RUN" and "-r requirements.txt" in args)
    assert "-c constraints.txt" in instructions[install][1]  # the whole tree pinned
    assert copy_requirements < install < instructions.index(("COPY", ". ."))  # dependencies cached in a layer


def test_the_healthcheck_asks_healthz_with_python_not_curl():
    command = _healthcheck()
    assert command[0] == "python" and "/healthz" in command[-1] and "PORT" in command[-1]
    assert "curl" not in " ".join(command)


# --- the build context -----------------------------------------------------------------------------

def _ignore_patterns() -> list[re.Pattern[str]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("!"), "exceptions are not understood by this test"
        text = re.escape(line.strip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        patterns.append(re.compile(text))
    return patterns


def build_context() -> list[str]:
    """The files ``docker build .`` sends, as .dockerignore filters them (paths relative to the root)."""
    patterns = _ignore_patterns()

    def ignored(relative: str) -> bool:
        parts = relative.split("/")
        return any(p.fullmatch("/".join(parts[:i])) for p in patterns for i in range(1, len(parts) + 1))

    files = []
    for directory, dirs, names in os.walk(ROOT):
        base = os.path.relpath(directory, ROOT)
        base = "" if base == "." else base + "/"
        dirs[:] = [d for d in dirs if not ignored(base + d)]
        files += [base + name for name in names if not ignored(base + name)]
    return sorted(files)


def test_the_build_context_holds_the_service_and_nothing_local():
    files = build_context()
    for needed in ("Procfile", "wsgi.py", "requirements.txt", "gunicorn.conf.py", "config/gunicorn_settings.py",
                   "config/demo-contacts.csv", "lookup_service/routes.py", "crm_backends/contact_store.py"):
        assert needed in files
    for path in files:
        assert not path.startswith((".git/", ".venv/", "instance/", "tests/", "bench/")), path
        assert "__pycache__" not in path and ".sqlite3" not in path, path


# --- app.json -----------------------------------------------------------------------------------------

def test_app_json_deploys_the_web_process_with_a_generated_token():
    app = json.loads((ROOT / "app.json").read_text())
    assert {"name", "description", "env", "formation", "buildpacks"} <= set(app)
    assert 3 <= len(app["name"]) <= 30
    assert app["buildpacks"] == [{"url": "heroku/python"}]
    assert set(app["formation"]) == {"web"} and app["formation"]["web"]["quantity"] >= 1
    assert app["env"]["LOOKUP_TOKENS"]["generator"] == "secret"
    assert all(addon["plan"].split(":")[0] in ("heroku-postgresql", "heroku-redis") for addon in app["addons"])


def test_app_json_names_only_settings_the_service_reads():
    app = json.loads((ROOT / "app.json").read_text())
    sources = "".join(path.read_text() for path in [*(ROOT / "config").glob("*.py"),
                                                      *(ROOT / "lookup_service").glob("*.py")])
    for name, spec in app["env"].items():
        assert re.search(rf"[\"']{name}[\"']", sources), f"{name} is read nowhere"
        assert "description" in spec
        assert "value" in spec or "generator" in spec or spec.get("required") is False, name


# --- the image's command, run as the image would run it ---------------------------------------------------

def _system_python() -> str | None:
    """A Python 3.11 that a non-root user may run (the development venv's lives under /root)."""
    for candidate in ("/usr/bin/python3.11", "/usr/local/bin/python3.11"):
        if os.path.exists(candidate):
            return candidate
    return None


def _uid() -> tuple[int, int]:
    user = _all("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit(), "USER should be numeric (uid:gid) so orchestrators can verify it"
    return int(uid), int(gid)


@pytest.fixture(scope="module")
def image():
    """The build context in a fresh directory with its dependencies installed by the Dockerfile's pip line."""
    python = _system_python()
    if python is None or subprocess.run([python, "-c", "import ensurepip, venv"], capture_output=True).returncode:
        pytest.skip("no system Python 3.11 with venv (Debian: apt-get install python3.11-venv) for a fresh environment")
    root = Path(tempfile.mkdtemp(prefix="lookup-image-"))
    root.chmod(0o755)
    app = root / "app"
    for relative in build_context():
        target = app / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    subprocess.run([python, "-m", "venv", str(root / "python")], check=True, timeout=120)
    env = {"PATH": f"{root / 'python' / 'bin'}:/usr/bin:/bin", "HOME": str(root), **_env()}
    install_env = {**env, "HOME": os.environ.get("HOME", str(root))}
    install_env.pop("PIP_NO_CACHE_DIR", None)  # what is installed is the same; this machine's cache halves the time
    for name in ("PIP_CERT", "PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_DEFAULT_TIMEOUT"):
        if name in os.environ:  # how this machine reaches the registry, as a build machine's docker would
            install_env[name] = os.environ[name]
    (install,) = [args for args in _all("RUN") if "-r requirements.txt" in args]
    done = subprocess.run(["sh", "-c", install], cwd=app, env=install_env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    uid, gid = _uid()
    (app / "instance").mkdir()
    # the user's home as the Dockerfile's useradd makes it: its own directory, or a root-owned one
    created = re.search(r"useradd .*--home-dir (\S+) .*--create-home", " ".join(_all("RUN")))
    home = root / "home"
    home.mkdir()
    env["HOME"] = str(home if created else app)
    if os.geteuid() == 0:  # the Dockerfile's chown; as another user the test runs as that user instead
        os.chown(app / "instance", uid, gid)
        if created:
            os.chown(home, uid, gid)
    yield app, env
    shutil.rmtree(root, ignore_errors=True)


def _as_image_user() -> dict[str, int]:
    if os.geteuid() != 0:
        return {}
    uid, gid = _uid()
    return {"user": uid, "group": gid, "extra_groups": []}


def _uids(pid: int) -> set[int]:
    """The real user id of ``pid`` and of its children (gunicorn's workers)."""
    found = set()
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for process in [pid, *(int(p) for p in children.read_text().split())] if children.exists() else [pid]:
        status = Path(f"/proc/{process}/status").read_text()
        found.add(int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1)))
    return found


def test_the_image_command_serves_the_readme_requests_as_a_non_root_user(image, tmp_path):
    app, env = image
    port = free_port()
    run_env = {**env, "PORT": str(port), "LOOKUP_TOKENS": TOKEN, "WEB_CONCURRENCY": "1"}
    service = start_service(json.loads(_all("CMD")[-1]), port, run_env, app, tmp_path / "image.log",
                            limit_s=60, **_as_image_user())
    try:
        if os.geteuid() == 0:
            assert _uids(service.process.pid) == {_uid()[0]}
        request = urllib.request.Request(f"{service.url}/Lookup?PhoneNumber=41215522000",
                                         headers={"X-Execution-Token": TOKEN})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200 and response.headers.get_content_type() == "application/json"
            assert json.loads(response.read()) == []  # a new, empty directory: nobody matches
        with urllib.request.urlopen(f"{service.url}/openapi.json", timeout=10) as response:
            assert json.loads(response.read())["paths"]["/Lookup"]
        assert (app / "instance" / "directory.sqlite3").exists()
        if os.geteuid() == 0:
            assert (app / "instance" / "directory.sqlite3").stat().st_uid == _uid()[0]
        healthy = subprocess.run(_healthcheck(), env=run_env, capture_output=True, timeout=30, **_as_image_user())
        assert healthy.returncode == 0, healthy.stderr
        # e.g. gunicorn's control socket under a home directory the user cannot write
        assert "[ERROR]" not in service.output() and "Permission denied" not in service.output(), service.output()
    finally:
        service.stop()
    down = subprocess.run(_healthcheck(), env=run_env, capture_output=True, timeout=30, **_as_image_user())
    assert down.returncode != 0  # the health check notices a service that does not answer


def test_the_demo_runs_in_the_image(image, tmp_path):
    """The README's ``docker run ... python -m lookup_service.demo``: demo contacts, a printed token."""
    app, env = image
    port = free_port()
    service = start_service(["python", "-m", "lookup_service.demo"], port, {**env, "PORT": str(port),
                            "WEB_CONCURRENCY": "1"}, app, tmp_path / "demo.log", limit_s=60, **_as_image_user())
    try:
        token = re.search(r"Token \(X-Execution-Token\): (\S+)", service.output()).group(1)
        request = urllib.request.Request(f"{service.url}/Lookup?PhoneNumber=41215522000",
                                         headers={"X-Execution-Token": token})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert [contact["name"] for contact in json.loads(response.read())] == ["Alexa Holiday"]
    finally:
        service.stop()


def test_the_readme_runs_the_image_it_builds():
    readme = (ROOT / "README.md").read_text()
    built = re.search(r"^docker build -t (\S+) \.$", readme, re.M).group(1)
    run = re.search(r"^docker run -p (\d+):(\d+) -e LOOKUP_TOKENS=\S+ (\S+)$", readme, re.M)
    assert run and run.group(3) == built
    assert run.group(2) == _env()["PORT"] in _all("EXPOSE")


def test_the_lock_pins_every_declared_package_at_its_declared_version():
    """constraints.txt (scripts/lock) holds the whole tree; a requirement added or bumped without
    running scripts/lock again would install an unpinned tree."""
    def pins(path: Path) -> dict[str, str]:
        found = {}
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                found[re.sub(r"\[.*\]", "", name).strip().lower().replace("_", "-")] = version.strip()
        return found

    locked = pins(ROOT / "constraints.txt")
    declared = {**pins(ROOT / "requirements.txt"), **pins(ROOT / "requirements-test.txt")}
    assert declared and len(locked) > len(declared)
    assert {name: version for name, version in declared.items() if locked.get(name) != version} == {}
