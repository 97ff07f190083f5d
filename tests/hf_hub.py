"""A local stand-in of the Hugging Face Hub's auth-check route (``/api/models/<repo>/auth-check``),
answering as huggingface.co does, so the real huggingface_hub client parses its answers.

    with serve() as hub:          # hub.url for HF_ENDPOINT / endpoint=; hub.calls: the paths asked
        ...

Tokens (built here: never real ones): GOOD reads everything, GATED has not accepted the terms,
BUSY meets a 503; anything else, or no token, is answered 401 RepoNotFound, as the Hub does.
"""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

GOOD = "hf_" + "good" * 8
GATED = "hf_" + "gate" * 8
INVALID = "hf_" + "nope" * 8
BUSY = "hf_" + "busy" * 8


def _handler(calls: list[str]):
    class Hub(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the name http.server calls)
            calls.append(self.path)
            token = self.headers.get("authorization", "").removeprefix("Bearer ")
            if not self.path.endswith("/auth-check"):
                status, code = 404, "RepoNotFound"
            elif token == GOOD:
                status, code = 200, None
            elif token == GATED:
                status, code = 403, "GatedRepo"
            elif token == BUSY:
                status, code = 503, None
            else:
                status, code = 401, "RepoNotFound"
            body = json.dumps({"error": code or "ok"}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", f"{code} for {self.path}")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Hub


@contextlib.contextmanager
def serve():
    calls: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(calls))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_address[1]}", calls=calls)
    finally:
        server.shutdown()
        server.server_close()
