"""API keys: random, shown once, stored only as a SHA-256 hash.

Keys carry 256 bits of randomness, so a fast hash is safe here (no password stretching needed);
lookups are by hash, so the plaintext never touches the database or the logs.
"""

from __future__ import annotations

import hashlib
import secrets

from dialer.clock import Clock
from storage.store import ApiKeyRow, Store

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


async def authenticate(store: Store, presented: str) -> ApiKeyRow | None:
    if not presented or len(presented) > 200:
        return None
    return await store.find_api_key(hash_key(presented))
