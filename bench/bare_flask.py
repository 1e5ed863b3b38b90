"""Reference 1: a bare Flask app whose /Lookup answers [] after the same token check."""

import hmac
import os

from flask import Flask, Response, request

TOKEN = os.environ["LOOKUP_TOKENS"].split(",")[0].strip().encode()
app = Flask(__name__)


@app.route("/Lookup", methods=["GET", "POST"])
def lookup() -> Response:
    presented = request.headers.get("X-Execution-Token")
    if not presented or not hmac.compare_digest(presented.encode(), TOKEN):
        return Response('{"error":"unauthorized"}', status=401, mimetype="application/json")
    return Response(b"[]", mimetype="application/json")


@app.route("/healthz")
def healthz() -> Response:
    return Response(b'{"status":"ok"}', mimetype="application/json")
