"""The cost of one SMS post as a day's conversation with one contact grows (POST /MessageLog on the
embedded directory, through the Flask app, no network): the milliseconds of the posts numbered 1, 10,
100, 500, 1,000 and ``--messages``. A day's conversation goes on in a next record every 100 messages,
so the figure should stay flat rather than grow with the day.

    python -m bench.bench_digest [--messages 2000] [--size 1000]
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import tempfile
import time

from crm_backends.contact_store import ContactStore
from crm_backends.directory_import import import_file
from lookup_service import create_app

TOKEN = "bench-token-0123456789"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1000, help="characters of each SMS")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-digest-")
    atexit.register(shutil.rmtree, work, True)
    csv = os.path.join(work, "contacts.csv")
    with open(csv, "w", encoding="utf-8") as handle:
        handle.write("id;name;phone\nalexa;Alexa Holiday;+41 21 552 20 00\n")
    directory = os.path.join(work, "directory.sqlite3")
    store = ContactStore(directory, "CH")
    import_file(store, csv)
    store.close()
    app = create_app({"LOOKUP_TOKENS": TOKEN, "LOOKUP_DIRECTORY": directory, "LOOKUP_INSTANCE_DIR": work,
                      "LOOKUP_STATE_DB": os.path.join(work, "state.sqlite3"), "LOOKUP_LOG_LEVEL": "WARNING",
                      "LOOKUP_ACCESS_LOG": "0"})
    logging.getLogger("lookup_service").setLevel(logging.WARNING)
    client = app.test_client()
    checkpoints = sorted({1, 10, 100, 500, 1000, args.messages} & set(range(1, args.messages + 1)))
    text = "x" * args.size
    for n in range(1, args.messages + 1):
        started = time.perf_counter()
        response = client.post("/MessageLog", headers={"X-Execution-Token": TOKEN}, json={"inputs": {
            "contactCrmId": "directory:alexa", "type": "SMS", "direction": "incoming", "fromNumber": "+41215522000",
            "toNumber": "+41445001020", "text": f"{n} {text}", "time": "2026-11-21T09:00:00Z", "messageId": f"m{n}"}})
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, response.get_json()
        if n in checkpoints:
            print(f"post {n:>6}: {elapsed:7.1f} ms", flush=True)
    app.extensions["lookup"].close()


if __name__ == "__main__":
    main()
