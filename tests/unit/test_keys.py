"""API keys: hashed at rest; the short-lived cache of keys that authenticated."""

from __future__ import annotations

from dialer import keys
from dialer.clock import FakeClock
from storage.rows import ApiKeyRow
from storage.store import Store
from tests.unit.conftest import ORG, T0


class CountingStore:
    """Counts key lookups on a real store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lookups = 0

    async def find_api_key(self, key_hash: str) -> ApiKeyRow | None:
        self.lookups += 1
        return await self.store.find_api_key(key_hash)


async def test_cached_key_is_looked_up_once_per_ttl(store: Store) -> None:
    """A burst of requests with one key costs one lookup; after the TTL it is looked up again."""
    _row, key = await keys.create_key(store, FakeClock(T0), ORG)
    now = [100.0]
    cache = keys.KeyCache(ttl_seconds=1.0, monotonic=lambda: now[0])
    counting = CountingStore(store)
    for _ in range(5):
        found = await cache.authenticate(counting, key)  # type: ignore[arg-type]
        assert found is not None and found.organization_id == ORG
    assert counting.lookups == 1
    now[0] += 1.0
    assert await cache.authenticate(counting, key) is not None  # type: ignore[arg-type]
    assert counting.lookups == 2


async def test_revoked_key_stops_working_within_the_ttl(store: Store) -> None:
    """Once the TTL has passed, a key revoked elsewhere is refused and leaves the cache."""
    row, key = await keys.create_key(store, FakeClock(T0), ORG)
    now = [0.0]
    cache = keys.KeyCache(ttl_seconds=1.0, monotonic=lambda: now[0])
    assert await cache.authenticate(store, key) is not None
    assert await store.revoke_api_key(row.id, T0 + 1)
    now[0] = 1.0
    assert await cache.authenticate(store, key) is None
    assert await cache.authenticate(store, key) is None


async def test_unknown_and_oversized_keys_are_not_cached(store: Store) -> None:
    """Unknown keys are looked up every time (never cached); absurd ones are not looked up."""
    cache = keys.KeyCache(ttl_seconds=60.0, monotonic=lambda: 0.0)
    counting = CountingStore(store)
    for _ in range(3):
        assert await cache.authenticate(counting, "dk_unknown") is None  # type: ignore[arg-type]
    assert counting.lookups == 3
    assert await cache.authenticate(counting, "x" * 500) is None  # type: ignore[arg-type]
    assert await cache.authenticate(counting, "") is None  # type: ignore[arg-type]
    assert counting.lookups == 3


async def test_cache_is_bounded(store: Store) -> None:
    """The cache holds at most max_entries keys, dropping the least recently used."""
    cache = keys.KeyCache(ttl_seconds=60.0, max_entries=2, monotonic=lambda: 0.0)
    made = [await keys.create_key(store, FakeClock(T0), ORG) for _ in range(3)]
    for _, key in made:
        assert await cache.authenticate(store, key) is not None
    counting = CountingStore(store)
    assert await cache.authenticate(counting, made[0][1]) is not None  # type: ignore[arg-type]
    assert counting.lookups == 1  # the oldest was dropped
    assert await cache.authenticate(counting, made[2][1]) is not None  # type: ignore[arg-type]
    assert counting.lookups == 1


def test_keys_are_hashed_with_sha256() -> None:
    """Only the SHA-256 of a key is ever stored or compared."""
    assert keys.hash_key("dk_x") == keys.hash_key("dk_x")
    assert len(keys.hash_key("dk_x")) == 64 and "dk_x" not in keys.hash_key("dk_x")
