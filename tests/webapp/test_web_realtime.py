"""Websockets against a real Daphne (subprocess) and the real Redis channel layer, with `websockets` clients."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import time

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from conftest import png_bytes

pytestmark = pytest.mark.django_db(transaction=True)
TIMEOUT = 20


def ws_url(daphne_url: str, path: str) -> str:
    return daphne_url.replace("http://", "ws://") + path


def session_headers(client_for, user) -> dict:
    return {"Cookie": f"sessionid={client_for(user).cookies['sessionid'].value}"}


def presence(viewer, dataset) -> dict:
    """``GET /datasets/{id}/presence`` as ``viewer``, from a worker thread (the test client is sync): with a database
    connection of its own, closed after."""
    from django.db import connection

    try:
        response = viewer.get(f"/api/datasets/{dataset.pk}/presence")
    finally:
        connection.close()
    assert response.status_code == 200, response.content
    return response.json()


def open_socket(daphne_url, path, headers=None, origin="own"):
    return connect(ws_url(daphne_url, path), additional_headers=headers or {},
                   origin=daphne_url if origin == "own" else origin, open_timeout=TIMEOUT)


async def next_of(socket, kind: str, timeout: float = TIMEOUT) -> dict:
    """The next message of type ``kind`` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(await asyncio.wait_for(socket.recv(), deadline - time.monotonic()))
        if message["type"] == kind:
            return message


def stroke(class_index: int, points, radius=2.0) -> dict:
    return {"op": "stroke", "class": class_index, "radius": radius, "points": points}


def stored_mask(sample):
    from webapp.datasets.services import read_mask

    sample.refresh_from_db()
    return read_mask(sample)


def test_sockets_need_a_role_and_the_page_origin(studio, daphne_url, client_for):
    from webapp.accounts.models import ApiToken

    sample = studio.samples[0]
    path = f"/ws/annotate/{sample.pk}/"
    _token, key = ApiToken.issue(studio.users.annotator, "script")
    annotator, nobody, artist = (session_headers(client_for, user) for user in (
        studio.users.annotator, studio.users.nobody, studio.users.artist))

    async def scenario():
        for headers, origin in [({}, "own"),  # anonymous
                                (annotator, "http://evil.example"),
                                (annotator, None),  # a cookie without an Origin: not from our page
                                (nobody, "own")]:  # logged in, but no role
            with pytest.raises(InvalidStatus) as refused:
                async with open_socket(daphne_url, path, headers, origin):
                    pass
            assert refused.value.response.status_code == 403
        async with open_socket(daphne_url, path, {"Authorization": f"Bearer {key}"}, origin=None) as socket:
            assert (await next_of(socket, "state"))["you"]["username"] == "ann"
        with pytest.raises(InvalidStatus):  # an edit session that does not exist
            async with open_socket(daphne_url, "/ws/edits/999/", artist):
                pass

    asyncio.run(scenario())


def test_malformed_messages_get_an_error_and_the_socket_stays_up(studio, daphne_url, client_for):
    sample = studio.samples[0]
    headers = session_headers(client_for, studio.users.annotator)

    async def scenario():
        async with open_socket(daphne_url, f"/ws/annotate/{sample.pk}/", headers) as socket:
            await next_of(socket, "state")
            bad = ["not json", "[1, 2]", json.dumps({"type": 5}), json.dumps({"type": "teleport"}),
                   json.dumps({"type": "op", "op": stroke(9, [[1, 1]])}),
                   json.dumps({"type": "op", "op": {"op": "stroke", "class": 1, "radius": 2, "points": "here"}}),
                   json.dumps({"type": "cursor", "x": "left"})]
            errors = []
            for text in bad:
                await socket.send(text)
                errors.append((await next_of(socket, "error"))["error"])
            await socket.send(json.dumps({"type": "ping"}))
            await next_of(socket, "pong")
            return errors

    errors = asyncio.run(scenario())
    assert "not valid JSON" in errors[0] and "JSON object" in errors[1] and "JSON object" in errors[2]
    assert "unknown message type 'teleport'" in errors[3]
    assert "class index in 0..2" in errors[4] and "[x, y]" in errors[5] and "numeric x and y" in errors[6]


def test_hostile_messages_get_an_error_and_nothing_is_relayed(studio, daphne_url, client_for):
    """A 50 000-deep array, NaN / Infinity / 1e400 and far-away cursor positions, a deeply nested op: each gets an
    error reply, the socket keeps working, and the other user in the room receives only the valid cursor."""
    sample = studio.samples[0]
    path = f"/ws/annotate/{sample.pk}/"
    watcher_headers, sender_headers = (session_headers(client_for, user) for user in (studio.users.artist,
                                                                                        studio.users.annotator))
    nested = 1
    for _level in range(20):
        nested = [nested]
    hostile = ["[" * 50_000 + "]" * 50_000, '{"type": "cursor", "x": NaN, "y": 1}',
               '{"type": "cursor", "x": 1, "y": -Infinity}', '{"type": "cursor", "x": Infinity, "y": 1}',
               '{"type": "cursor", "x": 1e400, "y": 1}', json.dumps({"type": "cursor", "x": 1e9, "y": 1}),
               json.dumps({"type": "op", "op": {"op": "runs", "runs": nested}})]

    async def scenario():
        async with open_socket(daphne_url, path, watcher_headers) as watcher, \
                open_socket(daphne_url, path, sender_headers) as sender:
            await next_of(watcher, "state")
            await next_of(sender, "state")
            errors = []
            for text in hostile:
                await sender.send(text)
                errors.append((await next_of(sender, "error"))["error"])
            await sender.send(json.dumps({"type": "cursor", "x": 7, "y": 8.5}))
            relayed = await next_of(watcher, "cursor")
            await sender.send(json.dumps({"type": "ping"}))
            await next_of(sender, "pong")
            return errors, relayed

    errors, relayed = asyncio.run(scenario())
    assert "nested too deeply" in errors[0] and "nested too deeply" in errors[6], errors
    assert all("finite numbers" in error for error in errors[1:5]), errors
    assert "far outside the 32×32 image" in errors[5]
    assert (relayed["x"], relayed["y"]) == (7.0, 8.5)  # the first cursor the other user saw is the valid one


def test_a_crashed_consumer_leaves_no_ghost_in_the_room(studio, daphne_url, client_for):
    """A consumer that dies from an exception (here a channel-layer event it has no handler for) gets no
    ``disconnect``; its presence entry and renewal task go anyway, at once, not after the presence TTL (30 s)."""
    from channels.layers import get_channel_layer

    sample = studio.samples[0]
    path = f"/ws/annotate/{sample.pk}/"
    viewer = client_for(studio.users.artist)
    alice, bob = (session_headers(client_for, user) for user in (studio.users.annotator, studio.users.annotator2))

    rooms = functools.partial(presence, viewer, studio.dataset)

    async def scenario():
        async with open_socket(daphne_url, path, bob) as survivor:
            await next_of(survivor, "state")
            crashing = await open_socket(daphne_url, path, alice)
            channel = (await next_of(crashing, "state"))["you"]["channel"]
            while len((await next_of(survivor, "presence"))["users"]) < 2:
                pass
            await get_channel_layer().send(channel, {"type": "no.such.event"})
            crashed = time.monotonic()
            while "ann" in [user["username"] for user in (await next_of(survivor, "presence", timeout=10))["users"]]:
                pass
            left_after = time.monotonic() - crashed
            with contextlib.suppress(Exception):
                await crashing.close()
            return left_after, await asyncio.to_thread(rooms)

    left_after, listed = asyncio.run(scenario())
    assert left_after < 10 and listed == {str(sample.pk): ["ann2"]}


def test_two_annotators_paint_one_mask_at_the_same_time(studio, daphne_url, client_for):
    """Both see each other's strokes live, in one server order, and the stored mask holds both."""
    from webapp.datasets.masks import apply_ops

    sample = studio.samples[2]  # not annotated yet
    alice_strokes = [stroke(1, [[2, y], [12, y]]) for y in range(2, 30, 3)]
    bob_strokes = [stroke(2, [[20, y], [30, y]]) for y in range(2, 30, 3)]

    async def painter(headers, strokes, peers_expected):
        async with open_socket(daphne_url, f"/ws/annotate/{sample.pk}/", headers) as socket:
            state = await next_of(socket, "state")
            while len((await next_of(socket, "presence"))["users"]) < peers_expected:
                pass
            seen = []
            for index, op in enumerate(strokes):
                await socket.send(json.dumps({"type": "op", "op": op, "client_id": f"{index}"}))
                await asyncio.sleep(0.01)
            while len(seen) < len(alice_strokes) + len(bob_strokes):
                seen.append(await next_of(socket, "op"))
            saved = await next_of(socket, "saved")
            return state, seen, saved

    alice_headers = session_headers(client_for, studio.users.annotator)
    bob_headers = session_headers(client_for, studio.users.annotator2)

    async def scenario():
        alice = painter(alice_headers, alice_strokes, 2)
        bob = painter(bob_headers, bob_strokes, 2)
        return await asyncio.gather(alice, bob)

    (alice_state, alice_seen, _), (_bob_state, bob_seen, _) = asyncio.run(scenario())
    assert alice_state["version"] == 0
    order = lambda seen: [(m["seq"], m["username"], m["client_id"]) for m in sorted(seen, key=lambda m: m["seq"])]
    assert order(alice_seen) == order(bob_seen)  # one server order for everybody
    assert {m["username"] for m in alice_seen} == {"ann", "ann2"}

    deadline = time.monotonic() + 10
    while (mask := stored_mask(sample)).max() == 0 or not (set(np.unique(mask)) >= {1, 2}):
        assert time.monotonic() < deadline, "the live strokes never reached the database"
        time.sleep(0.2)
    replayed = apply_ops(np.zeros((32, 32), np.uint8), [m["op"] for m in sorted(alice_seen, key=lambda m: m["seq"])])
    assert (mask == replayed).all()  # the stored mask is exactly the strokes in server order
    assert (mask[:, :13] == 1).any() and (mask[:, 19:] == 2).any()


def test_autosave_keeps_a_dropped_painters_work(studio, daphne_url, client_for):
    """A browser that vanishes mid-stroke loses at most what it had not sent: the server saves within 2 s."""
    from webapp.datasets.models import Annotation

    sample = studio.samples[0]
    before = Annotation.objects.get(sample=sample).version
    headers = session_headers(client_for, studio.users.annotator)

    async def scenario():
        socket = await open_socket(daphne_url, f"/ws/annotate/{sample.pk}/", headers)
        await next_of(socket, "state")
        await socket.send(json.dumps({"type": "op", "op": stroke(2, [[5, 5], [25, 5]], radius=1)}))
        await next_of(socket, "op")  # the server has it
        echoed = time.monotonic()
        socket.transport.abort()  # the network drops: no close handshake, no save message
        return echoed

    echoed = asyncio.run(scenario())
    while Annotation.objects.get(sample=sample).version == before:
        assert time.monotonic() - echoed < 2.0, "the stroke was not stored within 2 s"
        time.sleep(0.05)
    revision = Annotation.objects.get(sample=sample).revisions.first()
    assert revision.reason == "autosave" and "by ann" in revision.note
    assert (stored_mask(sample)[5, 6:24] == 2).all()


def test_viewers_may_watch_but_not_paint_and_see_cursors(studio, daphne_url, client_for):
    sample = studio.samples[0]
    artist_headers = session_headers(client_for, studio.users.artist)
    annotator_headers = session_headers(client_for, studio.users.annotator)

    async def scenario():
        async with open_socket(daphne_url, f"/ws/annotate/{sample.pk}/", artist_headers) as artist, \
                open_socket(daphne_url, f"/ws/annotate/{sample.pk}/", annotator_headers) as annotator:
            await next_of(artist, "state")
            await next_of(annotator, "state")
            await artist.send(json.dumps({"type": "op", "op": stroke(1, [[1, 1]])}))
            refused = await next_of(artist, "error")
            await annotator.send(json.dumps({"type": "cursor", "x": 3, "y": 4.5}))
            cursor = await next_of(artist, "cursor")
            return refused, cursor

    refused, cursor = asyncio.run(scenario())
    assert "not paint" in refused["error"]
    assert (cursor["username"], cursor["x"], cursor["y"]) == ("ann", 3.0, 4.5)


def test_job_socket_sends_status_and_takes_cancel(studio, daphne_url, client_for):
    from webapp.jobs.models import Job
    from webapp.jobs.services import QUEUE_OF_KIND

    # A queued row that no broker delivers: a Celery worker left running by another test file must not finish it
    # before the socket's cancel arrives (this test is about the socket, not the worker).
    job = Job.objects.create(kind=Job.Kind.SAMPLE, queue=QUEUE_OF_KIND[Job.Kind.SAMPLE],
                             requested_by=studio.users.admin, params={"dataset_id": studio.dataset.pk, "count": 1})
    admin, annotator = (session_headers(client_for, user) for user in (studio.users.admin, studio.users.annotator))

    async def not_mine():
        async with open_socket(daphne_url, f"/ws/jobs/{job.pk}/", annotator):
            pass

    async def scenario():
        async with open_socket(daphne_url, f"/ws/jobs/{job.pk}/", admin) as socket:
            first = await next_of(socket, "job.status")
            await socket.send(json.dumps({"type": "cancel"}))
            return first, await next_of(socket, "job.status")

    with pytest.raises(InvalidStatus):  # somebody else's job
        asyncio.run(not_mine())
    first, cancelled = asyncio.run(scenario())
    assert first["kind"] == "sample" and cancelled["status"] == "cancelled"


def test_an_edit_finished_while_its_socket_joins_is_reported_finished(studio):
    """An edit's job that finishes after the socket is authorised but before it joins the groups sends its event to
    no one there: the state sent on joining is read after the join, so it says finished (not the stale "queued")."""
    from asgiref.sync import async_to_sync

    from webapp.editing.models import EditSession
    from webapp.jobs.models import Job
    from webapp.jobs.services import QUEUE_OF_KIND
    from webapp.realtime.consumers import EditConsumer

    job = Job.objects.create(kind=Job.Kind.APPLY, queue=QUEUE_OF_KIND[Job.Kind.APPLY],
                             requested_by=studio.users.artist, params={})
    session = EditSession.objects.create(sample=studio.samples[0], generator=studio.generator,
                                         segmentation=studio.segmentation, mode=EditSession.Mode.APPLY, job=job,
                                         user=studio.users.artist)
    consumer = EditConsumer()
    consumer.scope, consumer.user = {"url_route": {"kwargs": {"session_id": session.pk}}}, studio.users.artist
    sent = []

    async def send_json(message):
        sent.append(message)

    consumer.send_json = send_json
    assert consumer.authorize() == [f"edit.{session.pk}", f"job.{job.pk}"]
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED)  # the worker finishes in between
    async_to_sync(consumer.joined)()
    assert sent[0]["type"] == "edit.state" and sent[0]["job_status"] == "succeeded", sent


def test_a_worker_process_publishes_in_order_over_one_connection(studio, monkeypatch):
    """A Celery pool process has no event loop: ``async_to_sync`` would run each message on a fresh loop, and the
    Redis layer would open a connection for each. On the publisher's one loop, eight messages (from two threads)
    take a connection per concurrent sender at most and arrive in the order each thread sent them."""
    from threading import Thread

    import redis
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer
    from django.conf import settings

    from webapp.realtime import groups

    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("test.publisher", channel)
    server = redis.Redis.from_url(settings.REDIS_URL)

    def connections_made() -> int:
        return server.info("stats")["total_connections_received"]

    monkeypatch.setattr(groups, "_publisher", groups._Publisher())
    before = connections_made()
    senders = [Thread(target=lambda name=name: [groups.publish("test.publisher", {"type": "t", "from": name, "n": n})
                                                 for n in range(4)]) for name in ("a", "b")]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    assert connections_made() - before <= 2  # one per thread sending at the same moment, at most

    async def receive_eight() -> list[dict]:  # one loop: the layer's receive buffer belongs to it
        return [await asyncio.wait_for(layer.receive(channel), TIMEOUT) for _ in range(8)]

    received = async_to_sync(receive_eight)()
    for name in ("a", "b"):
        assert [m["n"] for m in received if m["from"] == name] == [0, 1, 2, 3]


def test_dataset_presence_lists_who_is_in_each_live_room(studio, daphne_url, client_for):
    """``GET /datasets/{id}/presence`` follows joins and leaves of the dataset's annotation rooms (Redis state that
    every Daphne process shares); another dataset's rooms stay out of it."""
    from webapp.datasets import services as datasets

    first, second = studio.samples[0], studio.samples[1]
    other = datasets.create_dataset(studio.users.admin, "other set", studio.schema, studio.generator)
    elsewhere = datasets.add_sample(other, source="generated", image_png=png_of(first), seed=99)
    viewer = client_for(studio.users.artist)
    headers = {name: session_headers(client_for, getattr(studio.users, name))
               for name in ("annotator", "annotator2", "artist")}

    rooms = functools.partial(presence, viewer, studio.dataset)

    async def scenario():
        seen = {"empty": await asyncio.to_thread(rooms)}
        async with open_socket(daphne_url, f"/ws/annotate/{first.pk}/", headers["annotator"]) as alice, \
                open_socket(daphne_url, f"/ws/annotate/{first.pk}/", headers["artist"]) as watcher, \
                open_socket(daphne_url, f"/ws/annotate/{second.pk}/", headers["annotator2"]) as bob, \
                open_socket(daphne_url, f"/ws/annotate/{elsewhere.pk}/", headers["annotator"]) as away:
            for socket in (alice, watcher, bob, away):
                await next_of(socket, "state")
            seen["all"] = await asyncio.to_thread(rooms)
            seen["other"] = await asyncio.to_thread(presence, viewer, other)
            await bob.close()
            deadline = time.monotonic() + TIMEOUT
            while str(second.pk) in (now := await asyncio.to_thread(rooms)):
                assert time.monotonic() < deadline, "bob's leave never reached the presence"
                await asyncio.sleep(0.05)
            seen["bob left"] = now
        deadline = time.monotonic() + TIMEOUT
        while now := await asyncio.to_thread(rooms):
            assert time.monotonic() < deadline, f"rooms still occupied after everybody left: {now}"
            await asyncio.sleep(0.05)
        return seen

    seen = asyncio.run(scenario())
    assert seen["empty"] == {}
    assert seen["all"] == {str(first.pk): ["ann", "art"], str(second.pk): ["ann2"]}
    assert seen["other"] == {str(elsewhere.pk): ["ann"]}
    assert seen["bob left"] == {str(first.pk): ["ann", "art"]}
    assert viewer.get("/api/datasets/99999/presence").status_code == 404


def test_a_crashed_daphnes_users_leave_the_rooms_when_their_presence_expires(studio, daphne_url, start_daphne,
                                                                              client_for):
    """Presence entries expire unless the Daphne holding the socket renews them. A second web process with a short
    STUDIO_PRESENCE_TTL_SECONDS keeps its idle user listed for several TTLs; SIGKILLed (no leave is ever sent), its
    user is gone from ``GET /datasets/{id}/presence`` within the TTL and from the room of a user on the surviving
    Daphne at that process's next renewal (a third of its own TTL, default 30 s)."""
    from webapp.realtime.rooms import heartbeat_seconds

    ttl = 2.0
    crashing_url, crashing = start_daphne(STUDIO_PRESENCE_TTL_SECONDS=str(ttl))
    sample = studio.samples[0]
    path = f"/ws/annotate/{sample.pk}/"
    viewer = client_for(studio.users.artist)
    alice, bob = (session_headers(client_for, user) for user in (studio.users.annotator, studio.users.annotator2))

    rooms = functools.partial(presence, viewer, studio.dataset)

    async def scenario():
        seen = {}
        async with open_socket(daphne_url, path, bob) as survivor:
            await next_of(survivor, "state")
            on_crashing = await open_socket(crashing_url, path, alice)
            await next_of(on_crashing, "state")
            while len((await next_of(survivor, "presence"))["users"]) < 2:
                pass
            await asyncio.sleep(3 * ttl)  # nobody sends anything: only the renewals keep alice listed
            seen["idle"] = await asyncio.to_thread(rooms)
            crashing.kill()
            killed = time.monotonic()
            while "ann" in (await asyncio.to_thread(rooms)).get(str(sample.pk), []):
                assert time.monotonic() - killed < ttl + 5, "alice is still listed long after her Daphne died"
                await asyncio.sleep(0.1)
            seen["expired after"] = time.monotonic() - killed
            seen["rest"] = await asyncio.to_thread(rooms)
            while "ann" in (room := [user["username"] for user in (await next_of(
                    survivor, "presence", timeout=heartbeat_seconds() + ttl + TIMEOUT))["users"]]):
                pass
            seen["room after"], seen["room"] = time.monotonic() - killed, room
            with contextlib.suppress(Exception):  # its server is gone
                await on_crashing.close()
        return seen

    seen = asyncio.run(scenario())
    assert seen["idle"] == {str(sample.pk): ["ann", "ann2"]}
    assert seen["expired after"] <= ttl + 1.5, seen  # the last renewal was at most a third of the TTL before
    assert seen["rest"] == {str(sample.pk): ["ann2"]} and seen["room"] == ["ann2"]
    assert seen["room after"] <= ttl + heartbeat_seconds() + 2.0, seen


def png_of(sample) -> bytes:
    from webapp.storage import read_bytes

    return read_bytes(sample.image.name)


def runs_op(runs) -> dict:
    return {"op": "runs", "runs": runs}


def test_two_annotators_runs_and_geometry_ops_merge_into_the_stored_mask(studio, daphne_url, client_for):
    """Every op kind the studio's canvas and scripts send (pixel runs — any tool's result, here a fill that wraps
    rows — strokes and polygons), from two annotators at once, is applied in server order to the stored mask; a bad
    op gets an error naming its client_id and the socket keeps working."""
    from webapp.datasets.masks import apply_ops

    sample = studio.samples[3]  # not annotated yet
    width = sample.width
    # Alice: rows 2–5 filled with class 1 as one run (a flood fill result wraps from row to row), then a square
    # outline as several runs in one op and a class-2 brush stroke from a "script".
    alice_ops = [runs_op([[2 * width, 4 * width, 1]]),
                 runs_op([[10 * width + 4, 8, 2], [11 * width + 4, 1, 2], [11 * width + 11, 1, 2],
                          [12 * width + 4, 8, 2]]),
                 stroke(2, [[20, 20], [28, 20]], radius=1.5)]
    # Bob: a polygon over part of alice's rows, then an eraser run through it, then one more run.
    bob_ops = [{"op": "polygon", "class": 2, "points": [[8, 1], [16, 1], [16, 8], [8, 8]]},
               runs_op([[4 * width + 10, 4, 0]]),
               runs_op([[30 * width, width, 1]])]
    bad_ops = [runs_op([[5, 3, 1], [6, 2, 1]]),  # overlapping runs
               runs_op([[width * width - 2, 5, 1]]),  # past the end of the mask
               runs_op([[0, 1, 7]]),  # no class 7 in the schema
               runs_op([]), {"op": "runs", "runs": [[0, "1", 1]]}, {"op": "fill", "class": 1}]
    expected_total = len(alice_ops) + len(bob_ops)

    async def painter(headers, ops, name, bad=()):
        async with open_socket(daphne_url, f"/ws/annotate/{sample.pk}/", headers) as socket:
            await next_of(socket, "state")
            while len((await next_of(socket, "presence"))["users"]) < 2:
                pass
            for index, op in enumerate(ops):
                await socket.send(json.dumps({"type": "op", "op": op, "client_id": f"{name}:{index + 1}:0/1"}))
            for index, op in enumerate(bad):  # bad ops among good ones: each answered with an error, nothing else
                await socket.send(json.dumps({"type": "op", "op": op, "client_id": f"{name}:bad{index}"}))
            await socket.send(json.dumps({"type": "ping"}))  # the socket is still up after them all
            seen, errors, pong = [], [], False
            deadline = time.monotonic() + TIMEOUT
            while len(seen) < expected_total or len(errors) < len(bad) or not pong:
                message = json.loads(await asyncio.wait_for(socket.recv(), deadline - time.monotonic()))
                seen += [message] if message["type"] == "op" else []
                errors += [message] if message["type"] == "error" else []
                pong = pong or message["type"] == "pong"
            await socket.send(json.dumps({"type": "save"}))
            saved = await next_of(socket, "saved")
            return seen, errors, saved

    alice_headers = session_headers(client_for, studio.users.annotator)
    bob_headers = session_headers(client_for, studio.users.annotator2)

    async def scenario():
        return await asyncio.gather(painter(alice_headers, alice_ops, "alice", bad_ops),
                                    painter(bob_headers, bob_ops, "bob"))

    (alice_seen, errors, _), (bob_seen, _, _) = asyncio.run(scenario())
    order = sorted(alice_seen, key=lambda m: m["seq"])
    assert [m["seq"] for m in order] == [m["seq"] for m in sorted(bob_seen, key=lambda m: m["seq"])]
    assert {m["op"]["op"] for m in order} == {"runs", "stroke", "polygon"}
    assert [e["client_id"] for e in errors] == [f"alice:bad{i}" for i in range(len(bad_ops))]
    assert all(e["request"] == "op" for e in errors)
    messages = " | ".join(e["error"] for e in errors)
    for reason in ("must not overlap", "leaves the 32×32 mask", "classes 0..2", "1..4096", "integers",
                   "unknown operation 'fill'"):
        assert reason in messages, (reason, messages)

    deadline = time.monotonic() + 10
    while True:
        mask = stored_mask(sample)
        if (mask == apply_ops(np.zeros((32, 32), np.uint8), [m["op"] for m in order])).all():
            break
        assert time.monotonic() < deadline, "the stored mask is not the ops in server order"
        time.sleep(0.2)
    # Whatever the interleaving, pixels only one annotator touched hold exactly their runs.
    assert (mask[2:6, :8] == 1).all() and (mask[2:6, 17:] == 1).all()
    assert (mask[10, 4:12] == 2).all() and mask[11, 4] == mask[11, 11] == 2 and (mask[11, 5:11] == 0).all()
    assert (mask[30] == 1).all() and (mask[20, 21:28] == 2).all()
    assert (mask[4, 10:14] == 0).all() or (mask[4, 10:14] == 1).all()  # bob's eraser, unless alice's fill came later


def test_an_explicit_save_is_recorded_as_save_and_autosave_as_autosave(studio, daphne_url, client_for):
    """A Save pressed right after a stroke (before the autosave timer) is what the person did: reason 'save'."""
    from webapp.datasets.models import Annotation

    sample = studio.samples[0]
    headers = session_headers(client_for, studio.users.annotator)

    async def scenario():
        async with open_socket(daphne_url, f"/ws/annotate/{sample.pk}/", headers) as socket:
            await next_of(socket, "state")
            await socket.send(json.dumps({"type": "op", "op": stroke(2, [[5, 5], [25, 5]], radius=1)}))
            await socket.send(json.dumps({"type": "save"}))
            saved = await next_of(socket, "saved")
            await socket.send(json.dumps({"type": "op", "op": stroke(1, [[5, 9], [25, 9]], radius=1)}))
            autosaved = await next_of(socket, "saved")  # nobody asks: the timer stores it
            return saved, autosaved

    saved, autosaved = asyncio.run(scenario())
    assert (saved["reason"], saved["author"], saved["status"]) == ("save", "ann", "draft")
    assert autosaved["reason"] == "autosave" and autosaved["version"] == saved["version"] + 1
    reasons = {r.version: r.reason for r in Annotation.objects.get(sample=sample).revisions.all()}
    assert reasons[saved["version"]] == "save" and reasons[autosaved["version"]] == "autosave"


def test_the_room_hears_every_new_version_with_its_status(studio, daphne_url, client_for):
    """Submit, review, restore and REST saves (PUT …/annotation) change the version outside the room: the service
    announces each, so every client shows the version and status of the event that changed them (one source of
    truth)."""
    sample = studio.samples[1]  # annotated at version 1 by the fixture
    headers = session_headers(client_for, studio.users.annotator)
    annotator, admin = client_for(studio.users.annotator), client_for(studio.users.admin)

    def send(client, path, body):
        call = client.put if path == "" else client.post  # PUT …/annotation saves a whole mask
        response = call(f"/api/samples/{sample.pk}/annotation{path}", body, content_type="application/json")
        assert response.status_code == 200, response.content
        return response.json()

    whole_mask = base64.b64encode(png_bytes(np.ones((sample.height, sample.width), np.uint8))).decode()

    async def scenario():
        async with open_socket(daphne_url, f"/ws/annotate/{sample.pk}/", headers) as socket:
            state = await next_of(socket, "state")
            heard = []
            for client, path, body in ((annotator, "/submit", {"base_version": 1}),
                                       (admin, "/review", {"base_version": 2, "decision": "rejected", "note": "x"}),
                                       (annotator, "/restore", {"base_version": 3, "version": 1}),
                                       (admin, "", {"base_version": 4, "mask_png": whole_mask})):
                answer = await asyncio.to_thread(send, client, path, body)
                heard.append((answer, await next_of(socket, "saved")))
            return state, heard

    state, heard = asyncio.run(scenario())
    assert (state["version"], state["status"], state["author"]) == (1, "draft", "ann")
    for answer, saved in heard:
        assert saved["seq"] is None and (saved["version"], saved["status"]) == (answer["version"], answer["status"])
    assert [(s["reason"], s["mask_changed"], s["author"]) for _, s in heard] == [
        ("submit", False, "ann"), ("review", False, "boss"), ("restore", True, "ann"), ("save", True, "boss")]
