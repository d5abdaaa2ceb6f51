"""A `prealign serve` app on a free loopback port, for the tests that talk to it over HTTP."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


def serve_on_loopback(app):
    """Serve `app` until the generator is closed; yields its base URL (http://127.0.0.1:PORT)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
