"""Reference 2: a plain WSGI callable doing the same token check: the server's own ceiling."""

import hmac
import os

TOKEN = os.environ["LOOKUP_TOKENS"].split(",")[0].strip().encode()


def app(environ, start_response):
    presented = environ.get("HTTP_X_EXECUTION_TOKEN", "")
    if environ.get("PATH_INFO") == "/healthz":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"status":"ok"}']
    if not presented or not hmac.compare_digest(presented.encode(), TOKEN):
        start_response("401 Unauthorized", [("Content-Type", "application/json")])
        return [b'{"error":"unauthorized"}']
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
    return [b"[]"]
