"""Open a store from its URL: ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or
``postgresql://user@host:port/db``. The store is connected and migrated when returned."""

from __future__ import annotations

from niyanta.clock import Clock
from niyanta.errors import InvalidInput
from niyanta.store.base import Store, StoreLimits
from niyanta.store.postgres import PostgresStore
from niyanta.store.sqlite import SqliteStore

_SQLITE = "sqlite:///"


def store_for_url(url: str, clock: Clock | None = None, limits: StoreLimits | None = None) -> Store:
    """The backend for ``url``, not yet opened."""
    if url.startswith(_SQLITE):
        path = url[len(_SQLITE) :]
        if not path:
            raise InvalidInput(f"no database path in {url!r}")
        return SqliteStore(path, clock, limits)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url, clock, limits)
    raise InvalidInput(f"unsupported store URL {url!r}: use sqlite:///... or postgresql://...")


async def open_store(
    url: str, clock: Clock | None = None, limits: StoreLimits | None = None
) -> Store:
    store = store_for_url(url, clock, limits)
    await store.open()
    return store
