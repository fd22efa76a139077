"""API keys: random, shown once, stored only as a SHA-256 hash.

Keys carry 256 bits of randomness, so a fast hash is safe here (no password stretching needed);
lookups are by hash, so the plaintext never touches the database or the logs.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

from dialer.clock import Clock
from storage.rows import ApiKeyRow
from storage.store import Store

KEY_PREFIX = "dk_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


async def create_key(
    store: Store, clock: Clock, organization_id: str, name: str | None = None
) -> tuple[ApiKeyRow, str]:
    """Create a key; return its row and the plaintext (the only time it exists)."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKeyRow(
        id="key_" + secrets.token_hex(6),
        organization_id=organization_id,
        key_hash=hash_key(plaintext),
        prefix=plaintext[:10],
        name=name,
        created_at=clock.now(),
        revoked_at=None,
    )
    await store.insert_api_key(row)
    return row, plaintext


class KeyCache:
    """Keys that authenticated recently, so that a client's burst of requests costs one store
    lookup per `ttl_seconds` instead of one per request. Keys are revoked by the CLI, another
    process: a revoked key stops working within `ttl_seconds`. Unknown keys are never cached.
    """

    def __init__(
        self,
        ttl_seconds: float = 1.0,
        max_entries: int = 4096,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._monotonic = monotonic
        self._entries: OrderedDict[str, tuple[float, ApiKeyRow]] = OrderedDict()

    async def authenticate(self, store: Store, presented: str) -> ApiKeyRow | None:
        if not presented or len(presented) > 200:
            return None
        key_hash = hash_key(presented)
        now = self._monotonic()
        cached = self._entries.get(key_hash)
        if cached is not None and now - cached[0] < self.ttl_seconds:
            return cached[1]
        row = await store.find_api_key(key_hash)
        if row is None:
            self._entries.pop(key_hash, None)
            return None
        self._entries[key_hash] = (now, row)
        self._entries.move_to_end(key_hash)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return row
