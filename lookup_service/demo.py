"""``python -m lookup_service.demo``: the service on the embedded directory with demo contacts.

Generates a token (unless LOOKUP_TOKENS is set), imports config/demo-contacts.csv into
instance/demo-directory.sqlite3, prints the token and curl commands to try, then runs gunicorn
exactly as the Procfile does.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    os.chdir(ROOT)
    token = os.environ.get("LOOKUP_TOKENS", "").split(",")[0].strip() or secrets.token_urlsafe(24)
    os.environ.setdefault("LOOKUP_TOKENS", token)
    os.environ.setdefault("LOOKUP_DIRECTORY", "instance/demo-directory.sqlite3")
    port = os.environ.setdefault("PORT", "8000")

    from crm_backends.contact_store import ContactStore
    from crm_backends.directory_import import import_file

    store = ContactStore(os.environ["LOOKUP_DIRECTORY"], os.environ.get("LOOKUP_DEFAULT_REGION", "CH"))
    report = import_file(store, os.path.join(ROOT, "config", "demo-contacts.csv"))
    store.close()
    base = f"http://127.0.0.1:{port}"
    header = os.environ.get("LOOKUP_TOKEN_HEADER", "X-Execution-Token")
    auth = shlex.quote(f"{header}: {token}")
    body = shlex.quote('{"inputs": {"phoneNumber": "41215522000"}}')
    flow = shlex.quote(
        '{"inputs": {"contactCrmId": "directory:alexa", "direction": "incoming", '
        '"originatorNumber": "41215522000", "destinationNumber": "41445001020", '
        '"startedTime": "2026-11-21T09:00:00Z", "answeredTime": "2026-11-21T09:00:05Z", '
        '"endedTime": "2026-11-21T09:03:20Z"}}'
    )
    print(f"""
Demo directory: {report.imported} contacts in {os.environ['LOOKUP_DIRECTORY']}
Token ({header}): {token}

Try:
  curl -s -H {auth} '{base}/Lookup?PhoneNumber=41215522000'
  curl -s -H {auth} -H 'Content-Type: application/json' -d {body} {base}/Lookup
  curl -s -H {auth} -H 'Content-Type: application/json' -d {flow} {base}/CallFlow
  curl -s {base}/healthz
""", flush=True)
    command = ["gunicorn", "wsgi:app"]
    executable = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    os.execv(executable if os.path.exists(executable) else command[0], command)


if __name__ == "__main__":
    main()
