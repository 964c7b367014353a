"""The authoritative state of a live annotation room, kept in Redis so that any Daphne process can serve it.

Painting operations get a server sequence number (one Lua call: INCR + RPUSH, so list order = number order) and
wait in a per-sample list until they are flushed: applied, in that order, to the stored mask as a new autosave
revision. Flushes happen about ``STUDIO_AUTOSAVE_SECONDS`` after an operation and when a painter leaves, so a
browser that drops mid-stroke loses at most what it had not yet sent.

Presence is a hash per room (channel → member) plus, per dataset, the set of its samples whose room is occupied, so
``dataset_presence`` answers "who is where" for a dataset without scanning every room. Joins and leaves change both
in one Lua call each: a sample is in the set exactly while its room has somebody in it.

Entries expire: a sorted set per room holds each channel's expiry time (Redis clock), renewed by ``touch`` from the
Daphne process that holds the socket every ``heartbeat_seconds()`` (a third of ``STUDIO_PRESENCE_TTL_SECONDS``).
A Daphne that crashes never sends its leaves, and renews nothing: every call that reads or changes a room first
removes the entries past their expiry (and a room left empty from the dataset's set), so its users disappear at the
next heartbeat of anybody still in the room and from ``dataset_presence`` at once.
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Callable

import redis
import redis.asyncio as aioredis
from django.conf import settings


_APPEND = """
local seq = redis.call('INCR', KEYS[1])
redis.call('RPUSH', KEYS[2], string.format('{"seq":%d,%s', seq, string.sub(ARGV[1], 2)))
return seq
"""


# Shared by the presence scripts. KEYS[1]: the room's presence hash, KEYS[2]: its expiry zset, KEYS[3]: the dataset's
# set of occupied rooms. The Redis clock (TIME) decides expiry, so Daphne processes on several hosts agree.
_PRUNE_EXPIRED = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local removed = 0
for _, channel in ipairs(redis.call('HKEYS', KEYS[1])) do
  local expires = redis.call('ZSCORE', KEYS[2], channel)
  if not expires or tonumber(expires) <= now then
    redis.call('HDEL', KEYS[1], channel)
    removed = removed + 1
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
"""

# ARGV: channel, member JSON, sample id, ttl seconds → {entries removed or added, member JSON…}
_TOUCH = _PRUNE_EXPIRED + """
local added = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
redis.call('SADD', KEYS[3], ARGV[3])
local result = redis.call('HVALS', KEYS[1])
table.insert(result, 1, removed + added)
return result
"""


def _release_if_empty(sample_id_arg: int) -> str:
    """Lua tail of the leave/prune scripts: an empty room leaves the dataset's set (its sample id is
    ``ARGV[sample_id_arg]``); returns {entries removed, member JSON…}."""
    return f"""
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[{sample_id_arg}])
end
local result = redis.call('HVALS', KEYS[1])
table.insert(result, 1, removed)
return result
"""


# ARGV: channel, sample id
_LEAVE = _PRUNE_EXPIRED + """
removed = removed + redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
""" + _release_if_empty(2)

# ARGV: sample id
_PRUNE = _PRUNE_EXPIRED + _release_if_empty(1)


def heartbeat_seconds() -> float:
    """How often a socket's presence entry is renewed: three renewals fit in one time to live."""
    return settings.STUDIO_PRESENCE_TTL_SECONDS / 3


def _key(sample_id: int, part: str) -> str:
    return f"{settings.STUDIO_KEY_PREFIX}:room:{sample_id}:{part}"


def _occupied_key(dataset_id: int) -> str:
    return f"{settings.STUDIO_KEY_PREFIX}:dataset:{dataset_id}:rooms"


@lru_cache(maxsize=1)
def sync_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def async_redis() -> aioredis.Redis:
    return aioredis.Redis.from_url(settings.REDIS_URL, **settings.ASYNC_REDIS_OPTIONS)


async def append_op(client: aioredis.Redis, sample_id: int, entry: dict) -> int:
    """Give ``entry`` (``{"op": …, "user": …, "client_id": …}``) the room's next sequence number and queue it."""
    return int(await client.eval(_APPEND, 2, _key(sample_id, "seq"), _key(sample_id, "ops"), json.dumps(entry)))


async def pending_ops(client: aioredis.Redis, sample_id: int) -> list[dict]:
    return [json.loads(raw) for raw in await client.lrange(_key(sample_id, "ops"), 0, -1)]


def _sorted_members(raw_values) -> list[dict]:
    return sorted((json.loads(v) for v in raw_values), key=lambda m: (m["username"], m["since"]))


def _presence_keys(dataset_id: int, sample_id: int) -> tuple[str, str, str]:
    return _key(sample_id, "presence"), _key(sample_id, "seen"), _occupied_key(dataset_id)


async def touch(client: aioredis.Redis, dataset_id: int, sample_id: int, channel: str, member: dict
                ) -> tuple[bool, list[dict]]:
    """Put ``member`` (on ``channel``) in the room of ``sample_id`` of ``dataset_id``, or renew its entry for another
    ``STUDIO_PRESENCE_TTL_SECONDS``; expired entries go. Returns whether the room's list changed (someone expired,
    or this entry was new) and everybody there."""
    raw = await client.eval(_TOUCH, 3, *_presence_keys(dataset_id, sample_id), channel, json.dumps(member),
                            str(sample_id), repr(float(settings.STUDIO_PRESENCE_TTL_SECONDS)))
    return int(raw[0]) > 0, _sorted_members(raw[1:])


async def join(client: aioredis.Redis, dataset_id: int, sample_id: int, channel: str, member: dict) -> list[dict]:
    """Put ``member`` (on ``channel``) in the room of ``sample_id`` of ``dataset_id``; returns everybody there."""
    return (await touch(client, dataset_id, sample_id, channel, member))[1]


async def leave(client: aioredis.Redis, dataset_id: int, sample_id: int, channel: str) -> list[dict]:
    raw = await client.eval(_LEAVE, 3, *_presence_keys(dataset_id, sample_id), channel, str(sample_id))
    return _sorted_members(raw[1:])


async def members(client: aioredis.Redis, dataset_id: int, sample_id: int) -> list[dict]:
    raw = await client.eval(_PRUNE, 3, *_presence_keys(dataset_id, sample_id), str(sample_id))
    return _sorted_members(raw[1:])


def dataset_presence(dataset_id: int) -> dict[int, list[str]]:
    """``{sample_id: [username, …]}`` for every occupied room of the dataset (names sorted, each once); entries past
    their expiry (a crashed Daphne's users) are removed first."""
    client = sync_redis()
    sample_ids = sorted(int(raw) for raw in client.smembers(_occupied_key(dataset_id)))
    pipeline = client.pipeline(transaction=False)
    for sample_id in sample_ids:
        pipeline.eval(_PRUNE, 3, *_presence_keys(dataset_id, sample_id), str(sample_id))
    rooms = {}
    for sample_id, raw in zip(sample_ids, pipeline.execute()):
        names = sorted({json.loads(value)["username"] for value in raw[1:]})
        if names:
            rooms[sample_id] = names
    return rooms


def flush(sample_id: int, save: Callable[[list[dict]], dict]) -> dict | None:
    """Hand the room's waiting operation entries (``{"seq", "op", "username", …}`` in server order) to ``save``,
    which stores them as one revision and returns the room's new state; None if nothing was waiting.

    Runs in a worker thread (sync ORM in ``save``). A Redis lock makes concurrent flushes of one room take turns;
    operations appended meanwhile stay queued for the next flush (LTRIM removes exactly the ones applied), and
    operations that ``save`` refused (it raised) stay queued too.
    """
    client = sync_redis()
    with client.lock(_key(sample_id, "lock"), timeout=60, blocking_timeout=30):
        raw = client.lrange(_key(sample_id, "ops"), 0, -1)
        if not raw:
            return None
        state = save([json.loads(item) for item in raw])
        client.ltrim(_key(sample_id, "ops"), len(raw), -1)
        client.set(_key(sample_id, "flushed"), json.dumps(state))
        return state
