"""What `dialer serve` does once it listens, seen from outside."""

from __future__ import annotations

import json
import time
from typing import Any


def test_serve_keeps_startup_objects_out_of_full_collections(service_factory: Any) -> None:
    """Once it listens, `dialer serve` freezes what start-up built (modules, the numbering
    plan's metadata, the config) out of the garbage collector's full passes, which otherwise
    held the event loop ~40 ms each; its log says how many objects."""
    svc = service_factory()
    svc.start()
    frozen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10  # the line follows the listening socket's first answer
    while not frozen and time.monotonic() < deadline:
        lines = svc.log.read_text().splitlines()
        events = [json.loads(line) for line in lines if line[:1] == "{"]
        frozen = [e for e in events if e.get("event") == "startup_objects_frozen"]
        time.sleep(0.05)
    assert len(frozen) == 1
    assert frozen[0]["objects"] > 20_000  # the numbering plan's metadata alone is more
