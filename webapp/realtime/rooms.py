"""The authoritative state of a live annotation room, kept in Redis so that any Daphne process can serve it.

Painting operations get a server sequence number (one Lua call: INCR + RPUSH, so list order = number order) and
wait in a per-sample list until they are flushed: applied, in that order, to the stored mask as a new autosave
revision. Flushes happen about ``STUDIO_AUTOSAVE_SECONDS`` after an operation and when a painter leaves, so a
browser that drops mid-stroke loses at most what it had not yet sent.
"""
from __future__ import annotations

import json
from functools import lru_cache

import redis
import redis.asyncio as aioredis
from django.conf import settings

from webapp.errors import Conflict

_APPEND = """
local seq = redis.call('INCR', KEYS[1])
redis.call('RPUSH', KEYS[2], string.format('{"seq":%d,%s', seq, string.sub(ARGV[1], 2)))
return seq
"""


def _key(sample_id: int, part: str) -> str:
    return f"{settings.STUDIO_KEY_PREFIX}:room:{sample_id}:{part}"


@lru_cache(maxsize=1)
def sync_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def async_redis() -> aioredis.Redis:
    return aioredis.Redis.from_url(settings.REDIS_URL)


async def append_op(client: aioredis.Redis, sample_id: int, entry: dict) -> int:
    """Give ``entry`` (``{"op": …, "user": …, "client_id": …}``) the room's next sequence number and queue it."""
    return int(await client.eval(_APPEND, 2, _key(sample_id, "seq"), _key(sample_id, "ops"), json.dumps(entry)))


async def pending_ops(client: aioredis.Redis, sample_id: int) -> list[dict]:
    return [json.loads(raw) for raw in await client.lrange(_key(sample_id, "ops"), 0, -1)]


async def join(client: aioredis.Redis, sample_id: int, channel: str, member: dict) -> list[dict]:
    await client.hset(_key(sample_id, "presence"), channel, json.dumps(member))
    return await members(client, sample_id)


async def leave(client: aioredis.Redis, sample_id: int, channel: str) -> list[dict]:
    await client.hdel(_key(sample_id, "presence"), channel)
    return await members(client, sample_id)


async def members(client: aioredis.Redis, sample_id: int) -> list[dict]:
    raw = await client.hgetall(_key(sample_id, "presence"))
    return sorted((json.loads(v) for v in raw.values()), key=lambda m: (m["username"], m["since"]))


def flush(sample_id: int, user) -> dict | None:
    """Apply the waiting operations to the stored mask as one autosave revision; None if nothing was waiting.

    Runs in a worker thread (sync ORM). A Redis lock makes concurrent flushes of one room take turns; operations
    appended meanwhile stay queued for the next flush (LTRIM removes exactly the ones applied).
    """
    from webapp.datasets import services
    from webapp.datasets.masks import apply_ops
    from webapp.datasets.models import AnnotationRevision, Sample

    client = sync_redis()
    with client.lock(_key(sample_id, "lock"), timeout=60, blocking_timeout=30):
        raw = client.lrange(_key(sample_id, "ops"), 0, -1)
        if not raw:
            return None
        entries = [json.loads(item) for item in raw]
        sample = Sample.objects.select_related("dataset__schema").get(pk=sample_id)
        painters = sorted({e["username"] for e in entries})
        note = f"live operations {entries[0]['seq']}–{entries[-1]['seq']} by {', '.join(painters)}"
        for _attempt in range(5):  # a REST save may slip in between reading and writing: re-apply on top of it
            annotation = services.annotation_of(sample)
            base = annotation.version if annotation else 0
            mask = apply_ops(services.read_mask(sample), [e["op"] for e in entries])
            try:
                annotation = services.save_mask(sample, user, mask, base, AnnotationRevision.Reason.AUTOSAVE, note)
                break
            except Conflict:
                continue
        else:
            raise Conflict("the annotation kept changing while live operations were being saved; they stay queued")
        client.ltrim(_key(sample_id, "ops"), len(raw), -1)
        state = {"version": annotation.version, "seq": entries[-1]["seq"]}
        client.set(_key(sample_id, "flushed"), json.dumps(state))
        return state
