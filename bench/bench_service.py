"""Service benchmark: the lookup service against two references, under one load, in one run.

Starts, one after another and with the same gunicorn settings (the Procfile's command, PORT and
WEB_CONCURRENCY from the environment):

* the plain WSGI callable (bench/bare_wsgi.py): the ceiling of the server itself;
* a bare Flask app whose /Lookup returns [] after the same token check (bench/bare_flask.py);
* the service itself, exactly as the Procfile starts it,

drives each with the same load from a second process (wrk where installed, else bench/loadgen.py)
in alternating rounds and prints the median over the rounds of requests per second, p50 and p99
latency, the ratios to the bare Flask app (throughput and p99, round by round, their median), and
the CPU time the server's processes spent per request, which other work on a shared machine
disturbs much less than throughput or latency. Then:
uncached lookups on an embedded directory of 1,000,000 contacts, a tenant whose backend never
answers while another tenant is under load, 50 concurrent lookups of one uncached number, and
the import of 1,000,000 CSV rows (time and peak memory).

    python -m bench.bench_service [--duration 10] [--contacts 1000000] [--connections 16]

Figures are printed, never asserted. Traffic goes to 127.0.0.1 only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import latency_figures  # noqa: E402
from bench.make_contacts import write as write_contacts  # noqa: E402
from tests.servers import free_port  # noqa: E402

TOKEN = "bench-token-0123456789"
OTHER_TOKEN = "bench-hang-token-0123"
FIRST = 2000000  # the synthetic numbers are +41 44 2000000 .. +41 44 2000000+N-1


def procfile_command() -> list[str]:
    with open(os.path.join(ROOT, "Procfile")) as handle:
        for line in handle:
            if line.startswith("web:"):
                return shlex.split(os.path.expandvars(line[4:].strip()))
    raise SystemExit("Procfile has no web: line")


class Server:
    """One gunicorn started with the Procfile's command, ``wsgi:app`` swapped for ``target``."""

    def __init__(self, target: str, env: dict[str, str], log_path: str):
        self.port = free_port()
        command = [target if part == "wsgi:app" else part for part in procfile_command()]
        if command[0] == "gunicorn":
            command[0] = os.path.join(os.path.dirname(sys.executable), "gunicorn")
        full_env = {**os.environ, **env, "PORT": str(self.port)}
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=self.log, stderr=self.log,
                                         start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{target} exited at start; see {log_path}")
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"{target} did not start within 60 s")

    def cpu_seconds(self) -> float:
        """User and system CPU time used so far by the server: the master and its workers."""
        total = 0
        pids = [self.process.pid]
        while pids:
            pid = pids.pop()
            try:
                with open(f"/proc/{pid}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
                with open(f"/proc/{pid}/task/{pid}/children") as handle:
                    pids.extend(int(p) for p in handle.read().split())
            except (OSError, IndexError, ValueError):
                continue
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


def load(url: str, path: str, seconds: float, connections: int, token: str, random_span: int | None = None) -> dict:
    """Drive ``url`` for ``seconds``; rps, p50 and p99 (wrk if installed, else bench/loadgen.py)."""
    wrk = shutil.which("wrk")
    if wrk:
        script = ""
        if random_span:
            script = (f'request = function()\n  local n = math.random(0, {random_span - 1})\n'
                      f'  return wrk.format("GET", "/Lookup?PhoneNumber=4144" .. ({FIRST} + n))\nend\n')
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
            handle.write(script)
        try:
            output = subprocess.run(
                [wrk, "-t2", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-H",
                 f"X-Execution-Token: {token}", "-s", handle.name, url + path],
                capture_output=True, text=True, timeout=seconds + 60, check=True,
            ).stdout
        finally:
            os.unlink(handle.name)
        return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
                "requests": int(re.search(r"(\d+) requests in", output).group(1)),
                "p50_ms": _wrk_ms(output, "50%"), "p99_ms": _wrk_ms(output, "99%"),
                "errors": _wrk_errors(output), "tool": "wrk"}
    command = [sys.executable, "-m", "bench.loadgen", url + path, str(connections), str(seconds), token]
    if random_span:
        command += [str(FIRST), str(FIRST + random_span - 1)]
    result = json.loads(subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True,
                                       timeout=seconds + 60).stdout)
    result["tool"] = "loadgen"
    return result


def _wrk_ms(output: str, label: str) -> float:
    match = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    value, unit = float(match.group(1)), match.group(2)
    return round(value / 1000 if unit == "us" else value * 1000 if unit == "s" else value, 3)


def _wrk_errors(output: str) -> int:
    match = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return (int(match.group(1)) if match else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)


def best_figures(runs: list[dict]) -> dict:
    """The round with the most requests a second (errors added up over every round).

    The rounds alternate between the servers, and the best round of each is the one least
    disturbed by whatever else the machine did meanwhile. (With gunicorn's stock gthread worker
    one worker often took 15 of wrk's 16 keep-alive connections and the round measured half the
    throughput; config/balanced_worker.py now shares them evenly.)
    """
    best = max(runs, key=lambda run: run["rps"])
    return {**best, "errors": sum(run.get("errors", 0) for run in runs)}


def measured_load(server: Server, path: str, seconds: float, connections: int, token: str,
                  random_span: int | None = None) -> dict:
    """``load`` on ``server``, with the server's CPU time per request (microseconds)."""
    before = server.cpu_seconds()
    figures = load(server.url, path, seconds, connections, token, random_span)
    spent = server.cpu_seconds() - before
    count = figures.get("requests") or figures["rps"] * seconds
    figures["cpu_us"] = spent / count * 1e6 if count else 0.0
    return figures


def median_figures(runs: list[dict]) -> dict:
    """Each figure's median over the rounds (errors added up)."""
    keys = ("rps", "p50_ms", "p99_ms", "cpu_us")
    return {**{key: statistics.median(run[key] for run in runs) for key in keys},
            "errors": sum(run.get("errors", 0) for run in runs)}


def median_row(label: str, runs: list[dict], bare_runs: list[dict]) -> None:
    """One line of medians over alternating rounds, with the round-by-round ratios to the bare app
    (throughput, p99, and the bare app's CPU per request over this one's), each as median, min-max."""
    figures = median_figures(runs)

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    pairs = list(zip(runs, bare_runs, strict=True))
    rps = spread([run["rps"] / bare["rps"] for run, bare in pairs])
    p99 = spread([run["p99_ms"] / bare["p99_ms"] for run, bare in pairs])
    cpu = spread([bare["cpu_us"] / run["cpu_us"] for run, bare in pairs if run["cpu_us"]] or [0.0])
    print(f"{label:<52} rps={figures['rps']:>8.1f}  p50={figures['p50_ms']:>6.2f}ms  p99={figures['p99_ms']:>7.2f}ms  "
          f"cpu/req={figures['cpu_us']:>6.1f}us  errors={figures['errors']}  ratio={rps}  p99_ratio={p99}  "
          f"cpu_ratio={cpu}", flush=True)


def row(label: str, figures: dict, baseline: dict | None, round_ratios: list[float] | None = None) -> None:
    ratio = f"  ratio={figures['rps'] / baseline['rps']:.2f}" if baseline else ""
    if round_ratios:
        ratio += f"  (round by round: median {statistics.median(round_ratios):.2f}, {min(round_ratios):.2f}" \
                 f" to {max(round_ratios):.2f})"
    print(f"{label:<52} rps={figures['rps']:>9.1f}  p50={figures['p50_ms']:>7.3f}ms  "
          f"p99={figures['p99_ms']:>7.3f}ms  errors={figures.get('errors', 0)}{ratio}", flush=True)


# --- the import -----------------------------------------------------------------------------------

def measure_import(csv_path: str, env: dict[str, str]) -> dict:
    """Run the CLI import; wall time and the peak memory of its process tree."""
    figures = measure_command(["directory", "import", csv_path], env)
    figures["progress_bar"] = "importing" in figures.pop("stderr")
    return figures


def measure_command(arguments: list[str], env: dict[str, str]) -> dict:
    """Run ``flask --app wsgi ARGUMENTS``; wall time and the peak memory of its process tree."""
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    started = time.monotonic()
    process = subprocess.Popen([flask, "--app", "wsgi", *arguments], cwd=ROOT,
                               env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_memory(process.pid))
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    out, err = process.communicate()
    if process.returncode:
        raise SystemExit(f"{' '.join(arguments[:2])} failed: {err.decode()[-2000:]}")
    return {"seconds": round(elapsed, 2), "peak_pss_mb": round(peak / 1024 / 1024, 1),
            "summary": out.decode().strip().splitlines()[0], "stderr": err.decode()}


def _tree_memory(pid: int) -> int:
    """Memory of a process and its descendants: the sum of their proportional set sizes (PSS),
    so pages the import's worker processes share with it after fork() count once, not per process
    as a sum of RSS would count them. Falls back to RSS where smaps_rollup is missing."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            total += _pss(current)
            with open(f"/proc/{current}/task/{current}/children") as handle:
                pids.extend(int(p) for p in handle.read().split())
        except OSError:
            continue
    return total


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    with open(f"/proc/{pid}/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- misbehaving and counting sources for the engine scenarios ---------------------------------------

class _Silent(threading.Thread):
    """A TCP server that accepts connections and never answers: a backend that hangs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)


class _Counting(ThreadingHTTPServer):
    """A JSON API answering after ``delay`` seconds and counting the requests it gets."""

    daemon_threads = True

    def __init__(self, delay: float):
        self.delay = delay
        self.count = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                with outer.lock:
                    outer.count += 1
                time.sleep(outer.delay)
                body = json.dumps([{"id": "r1", "name": "Remote Person", "phone": "+41 44 999 00 00"}]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def engine_config(path: str, directory: str, silent_port: int, counting_port: int) -> None:
    with open(path, "w") as handle:
        handle.write(f"""
deadline_ms = 500
[[tenant]]
name = "office"
tokens = ["{TOKEN}"]
  [[tenant.backend]]
  name = "phonebook"
  type = "directory"
  path = "{directory}"
[[tenant]]
name = "hanging"
tokens = ["{OTHER_TOKEN}"]
cache_ttl = 0
negative_cache_ttl = 0
  [[tenant.backend]]
  name = "phonebook"
  type = "directory"
  path = "{directory}"
  [[tenant.backend]]
  name = "stuck"
  type = "rest"
  lookup_url = "http://127.0.0.1:{silent_port}/search?phone={{e164}}"
  results = "@"
  timeout = 5
  [tenant.backend.fields]
  id = "id"
  name = "name"
  phones = "phone"
[[tenant]]
name = "shared"
tokens = ["bench-shared-token-0123"]
  [[tenant.backend]]
  name = "phonebook"
  type = "directory"
  path = "{directory}"
  [[tenant.backend]]
  name = "remote"
  type = "rest"
  lookup_url = "http://127.0.0.1:{counting_port}/search?phone={{e164}}"
  results = "@"
  [tenant.backend.fields]
  id = "id"
  name = "name"
  phones = "phone"
""")


def hanging_lookups(url: str, seconds: float, count: int) -> list[float]:
    """``count`` threads doing lookups on the hanging tenant for ``seconds``; their durations."""
    durations: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker(offset: int) -> None:
        i = 0
        while time.monotonic() < stop_at:
            number = f"4144{FIRST + offset * 100000 + i}"
            started = time.perf_counter()
            request = urllib.request.Request(f"{url}/Lookup?PhoneNumber={number}",
                                             headers={"X-Execution-Token": OTHER_TOKEN})
            urllib.request.urlopen(request, timeout=10).read()
            with lock:
                durations.append(time.perf_counter() - started)
            i += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 20)
    return durations


def concurrent_same_number(url: str, count: int) -> list[int]:
    statuses: list[int] = []
    barrier = threading.Barrier(count)

    def ask() -> None:
        request = urllib.request.Request(f"{url}/Lookup?PhoneNumber=41449990000",
                                         headers={"X-Execution-Token": "bench-shared-token-0123"})
        barrier.wait(10)
        statuses.append(urllib.request.urlopen(request, timeout=10).status)

    threads = [threading.Thread(target=ask) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return statuses


def metric_value(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} ([\d.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


# --- main ---------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per round and scenario")
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; the best is printed")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="lookup-bench-")
    logs = os.path.join(work, "servers.log")
    directory = os.path.join(work, "directory.sqlite3")
    base_env = {
        "LOOKUP_TOKENS": TOKEN,
        "LOOKUP_DIRECTORY": directory,
        "LOOKUP_STATE_DB": os.path.join(work, "state.sqlite3"),
        "LOOKUP_INSTANCE_DIR": os.path.join(work, "instance"),
        "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY", "2"),
    }
    loader = "wrk" if shutil.which("wrk") else "bench/loadgen.py"
    print(f"machine: {os.cpu_count()} cores; gunicorn: {' '.join(procfile_command())}; "
          f"WEB_CONCURRENCY={base_env['WEB_CONCURRENCY']}; load: {args.connections} connections, "
          f"{args.rounds} x {args.duration:.0f}s per scenario; loader: {loader}", flush=True)

    try:
        # 1. the import, which also builds the directory for the lookups below
        csv_path = os.path.join(work, "contacts.csv")
        write_contacts(csv_path, args.contacts)
        figures = measure_import(csv_path, base_env)
        print(f"{f'import of {args.contacts} CSV rows':<52} seconds={figures['seconds']}  "
              f"peak_memory_mb={figures['peak_pss_mb']} (PSS, process tree)  "
              f"progress_bar={figures['progress_bar']}  ({figures['summary']})", flush=True)
        os.unlink(csv_path)
        # The phone index snapshot, which the service would otherwise start building after its
        # first lookup: built here before the servers start, so every round measures the same.
        figures = measure_command(["directory", "index"], base_env)
        print(f"{'phone index snapshot of the directory':<52} seconds={figures['seconds']}  "
              f"peak_memory_mb={figures['peak_pss_mb']} (PSS)  ({figures['summary']})", flush=True)

        path_hit = f"/Lookup?PhoneNumber=4144{FIRST + 12345}"
        # Every server gets the same load: wrk builds each request with the same script, a random
        # number of the directory's range (one number, always the same, for the cache hits).
        scenarios = (
            ("plain WSGI callable (server ceiling)", "bench.bare_wsgi:app", {}, args.contacts),
            ("bare Flask app, same token check", "bench.bare_flask:app", {}, args.contacts),
            ("service, cache hits", "wsgi:app", {}, 1),
            (f"service, uncached, directory of {args.contacts}", "wsgi:app",
             {"LOOKUP_CACHE_TTL": "0", "LOOKUP_NEGATIVE_CACHE_TTL": "0"}, args.contacts),
        )
        # All four servers run at once but only one is under load at a time; the rounds alternate
        # between them so that a passing disturbance of the machine does not favour one of them.
        servers = [Server(target, {**base_env, **env}, logs) for _, target, env, _ in scenarios]
        samples: dict[str, list[dict]] = {label: [] for label, *_ in scenarios}
        try:
            for (_label, *_rest, span), server in zip(scenarios, servers, strict=True):
                load(server.url, path_hit, 2, args.connections, TOKEN, span)  # warm-up
            for _round in range(args.rounds):
                for (label, *_rest, span), server in zip(scenarios, servers, strict=True):
                    figures = measured_load(server, path_hit, args.duration, args.connections, TOKEN, span)
                    samples[label].append(figures)
        finally:
            for server in servers:
                server.stop()
        bare_label = "bare Flask app, same token check"
        bare = best_figures(samples[bare_label])
        print(f"(medians of {args.rounds} alternating rounds of {args.duration:.0f}s each; ratios to the bare Flask "
              f"app of the same round: their median, then the lowest and highest)")
        for label, runs in samples.items():
            median_row(label, runs, samples[bare_label])

        # 2. a backend that never answers, and 3. single flight across workers (Redis)
        silent = _Silent()
        silent.start()
        counting = _Counting(delay=0.3)
        threading.Thread(target=counting.serve_forever, daemon=True).start()
        config = os.path.join(work, "lookup.toml")
        engine_config(config, directory, silent.port, counting.server_address[1])
        # the breaker would soon skip the silent backend; here every lookup must meet it
        env = {**base_env, "LOOKUP_CONFIG": config, "LOOKUP_BREAKER_FAILURES": "1000000000"}
        server = Server("wsgi:app", env, logs)
        try:
            load(server.url, path_hit, 2, args.connections, TOKEN)
            hung: list[float] = []
            hang_for = args.rounds * (args.duration + 0.5) + 1
            hanger = threading.Thread(target=lambda: hung.extend(hanging_lookups(server.url, hang_for, 8)))
            hanger.start()
            time.sleep(0.5)
            under_hang = best_figures([load(server.url, path_hit, args.duration, args.connections, TOKEN, 1)
                                       for _ in range(args.rounds)])
            hanger.join(hang_for + 30)
            row("other tenant's cache hits while 8 lookups hang", under_hang, bare)
            stats = latency_figures(hung)
            print(f"{'lookups on the tenant whose backend never answers':<52} n={stats['n']}  "
                  f"p50={stats['p50_ms']}ms  p99={stats['p99_ms']}ms  max={max(hung) * 1000:.1f}ms  "
                  f"(deadline 500 ms, limit 550 ms)", flush=True)
        finally:
            server.stop()

        redis_server = shutil.which("redis-server")
        if not redis_server:
            print("single flight across workers: skipped (redis-server not installed)")
            return
        redis_port = free_port()
        redis = subprocess.Popen([redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no"], stdout=subprocess.DEVNULL)
        metrics_dir = os.path.join(work, "prometheus")
        os.makedirs(metrics_dir)
        try:
            time.sleep(0.3)
            env = {**env, "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "LOOKUP_METRICS_TOKEN": "bench-metrics-1",
                   "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
            server = Server("wsgi:app", env, logs)
            try:
                before = counting.count
                statuses = concurrent_same_number(server.url, 50)
                request = urllib.request.Request(server.url + "/metrics",
                                                 headers={"Authorization": "Bearer bench-metrics-1"})
                text = urllib.request.urlopen(request, timeout=5).read().decode()
                directory_calls = metric_value(text, "lookup_backend_latency_seconds_count",
                                               'backend="phonebook",tenant="shared"')
                print(f"{'50 concurrent lookups of one uncached number':<52} answers_200={statuses.count(200)}  "
                      f"calls: remote={counting.count - before} directory={int(directory_calls)}  "
                      f"(WEB_CONCURRENCY={env['WEB_CONCURRENCY']}, Redis)", flush=True)
            finally:
                server.stop()
        finally:
            redis.terminate()
            redis.wait(5)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
