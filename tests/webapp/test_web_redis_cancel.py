"""A websocket's background Redis work ends when it is cancelled, whenever the cancellation lands.

Consumers cancel their channel-layer receive loop when the socket closes, and the annotation rooms cancel their
presence renewal; both must end, or the consumer never finishes and its socket never leaves its room. With a socket
timeout, redis-py wraps each write in ``asyncio.wait_for``, whose Python 3.11 version swallows a cancellation that
lands as the write completes (here within the first ~20 tries). Each try runs in a fresh event loop, as each
``asyncio.run`` of a test or each new connection does, so the race at connecting is covered too.
"""
from __future__ import annotations

import asyncio
import itertools

import pytest

DELAYS = (0.0, 0.0005, 0.001, 0.002, 0.005)  # seconds between starting the work and cancelling it
TRIES = 300
ENDS_WITHIN = 20.0  # seconds; a cancelled task ends in milliseconds, one that swallowed it never does


def check_cancellations_end(start_work) -> None:
    """Start ``start_work()`` (work that runs until cancelled) as a task in a fresh loop ``TRIES`` times, cancel it
    after each delay of ``DELAYS`` in turn, and fail saying how each try whose task did not end cancelled went."""
    failures = []
    for delay in itertools.islice(itertools.cycle(DELAYS), TRIES):
        loop = asyncio.new_event_loop()
        try:
            task = loop.create_task(start_work())
            loop.run_until_complete(asyncio.sleep(delay))
            task.cancel()
            loop.run_until_complete(asyncio.wait([task], timeout=ENDS_WITHIN))
            if not task.done():
                failures.append(f"cancelled after {delay} s: still running {ENDS_WITHIN:g} s later")
                task.cancel()  # once more, so that it ends before its loop closes
                loop.run_until_complete(asyncio.wait([task], timeout=ENDS_WITHIN))
                break
            if not task.cancelled():
                failures.append(f"cancelled after {delay} s: went on, and ended by {type(task.exception()).__name__}")
        finally:
            loop.close()
    if failures:  # no traceback: Python 3.11 can fail to parse source while a swallowed cancellation's task lingers
        pytest.fail("\n".join(failures), pytrace=False)


def test_a_cancelled_channel_layer_receive_ends():
    from channels.layers import get_channel_layer

    layer = get_channel_layer()

    async def receive_on_a_new_channel():
        await layer.receive(await layer.new_channel())

    check_cancellations_end(receive_on_a_new_channel)


def test_a_cancelled_presence_renewal_ends():
    from webapp.realtime import rooms

    room = (10**9, 10**9)  # a dataset and sample id no test's rows reach
    channel = "specific.test!renewal"

    async def renew_forever():
        client = rooms.async_redis()
        try:
            while True:
                await rooms.touch(client, *room, channel, {"username": "renewal", "since": 0.0})
        finally:
            await client.aclose()

    async def leave():
        client = rooms.async_redis()
        await rooms.leave(client, *room, channel)
        await client.aclose()

    try:
        check_cancellations_end(renew_forever)
    finally:
        asyncio.run(leave())
