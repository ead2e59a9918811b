"""A threaded HTTP server on 127.0.0.1 for download tests (no network needed): ``serve(handler)``."""

import contextlib
import socket
import threading
from http.server import ThreadingHTTPServer

PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@contextlib.contextmanager
def serve(handler, monkeypatch):
    """Serves ``handler`` (a ``BaseHTTPRequestHandler`` class) until the block ends; yields its base URL.

    Proxy variables are cleared so that clients talk to the server directly."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"
