"""`dialer serve` installs the connection limits: idle connections past the cap are shed."""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.request
from typing import Any


def test_serve_sheds_idle_connections_past_max_connections(service_factory: Any) -> None:
    """max_connections = 20: of 100 idle connections the oldest 80 are shed; /healthz is fast."""
    svc = service_factory()
    svc.config.write_text(
        svc.config.read_text().replace("burst = 100000\n", "burst = 100000\nmax_connections = 20\n")
    )
    svc.start()
    idle: list[socket.socket] = []
    try:
        for _ in range(100):
            sock = socket.create_connection(("127.0.0.1", svc.port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
            idle.append(sock)
        started = time.perf_counter()
        with urllib.request.urlopen(svc.url("/healthz"), timeout=5) as resp:
            assert resp.status == 200
        assert time.perf_counter() - started < 1.0
        # The oldest 80 were shed (EOF at once); the newest 20 are still open.
        for sock in idle[:80]:
            sock.settimeout(5)
            with contextlib.suppress(ConnectionResetError):  # a reset is closed too
                assert sock.recv(1) == b""
    finally:
        for sock in idle:
            sock.close()
    assert "connections_shed" in svc.log.read_text()
