"""NDB's global cache on Redis (Memorystore in production), for the org registry only.

When `REDIS_CACHE_URL` is set, NDB keeps entities it reads in Redis and
invalidates them when it writes them. That is only sound for entities that every
writer writes through NDB with the same cache, so only `namespace` (the org,
read on every authenticated request, written only by this service's NDB code)
is cached. Never cached:

- `api-key`: revocation must take effect on the next request wherever it is
  issued, and an operator's `metering keys revoke` (no Redis: Memorystore is not
  reachable from a laptop) or an instance whose Redis is down cannot invalidate a
  cached copy. The key is one lookup by key name, cheap enough to read every time;
  `ApiKey` also opts out itself (`_use_global_cache`), for contexts without this
  policy.
- `meter-event` and `meter-rollup`: written by raw RPCs (app/storage), which NDB
  cannot see, so a cached copy would go stale;
- `meter`: the Go service writes meters in the same Datastore, without our cache.

If Redis goes away the service keeps working uncached: reads treat errors as
misses and writes log the failed invalidation instead of failing (strict_write
off). A missed invalidation could leave a stale entry behind for when Redis
returns, so every entry expires after `CACHE_SECONDS`. A stale `namespace` cannot
let anyone in: an org is archived by revoking its keys too (app/services/orgs.py).
"""

from __future__ import annotations

import redis
from google.cloud import ndb
from redis.backoff import NoBackoff
from redis.retry import Retry

CACHED_KINDS = frozenset({"namespace"})
CACHE_SECONDS = 60
#: Redis is on the request path: a dead or hung Redis must cost milliseconds, not
#: seconds, so calls time out fast and are not retried (redis-py retries 10 times
#: by default); the caller falls back to the Datastore or to counting locally.
SOCKET_TIMEOUT_SECONDS = 0.25

_clients: dict[str, redis.Redis] = {}


def redis_client(url: str) -> redis.Redis:
    """One Redis client (with its connection pool) per URL and process."""
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )
    return _clients[url]


def cached_kind(key) -> bool:
    """NDB's global cache policy: whether entities of this (google.cloud.datastore) key's
    kind are cached."""
    return key.kind in CACHED_KINDS


def context_options(config) -> dict:
    """Keyword arguments of `ndb.Client.context` for this configuration."""
    if not config.redis_url:
        return {}
    cache = ndb.RedisCache(redis_client(config.redis_url), strict_read=False, strict_write=False)
    return {
        "global_cache": cache,
        "global_cache_policy": cached_kind,
        "global_cache_timeout_policy": lambda key: CACHE_SECONDS,
    }
