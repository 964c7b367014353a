"""The library's sliders on a live-apply socket (``ws/apply/<sample>/``): each position comes back as the engine's
picture, with no edit session or job row; positions coalesce to the newest; bad ones are refused, and a lost one
times out, without closing the socket."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from test_web_realtime import next_of, open_socket, session_headers

pytestmark = pytest.mark.django_db(transaction=True)
TIMEOUT = 120


def jpeg_pixels(data_url: str) -> np.ndarray:
    prefix = "data:image/jpeg;base64,"
    assert data_url.startswith(prefix), data_url[:40]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix):]))).convert("RGB"), np.float32)


def engine_picture(studio, tiny_models, sample, scale: float) -> np.ndarray:
    """The sample with the studio's vector at ``scale``, drawn by the engine directly, as 8-bit RGB."""
    from editor_core.bundle import latents_from_bytes
    from editor_core.vectors import EditVector
    from webapp.storage import read_bytes

    ws = latents_from_bytes(read_bytes(sample.latent.name), tiny_models.fingerprint)
    delta = EditVector.load(tiny_models.folder / "vector.safetensors").delta
    with torch.no_grad():
        image = tiny_models.generator.synthesis(ws + scale * delta, noise_mode="const")[0]
    return ((image.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().numpy()


def test_a_slider_position_comes_back_as_the_engines_picture(studio, tiny_models, celery_worker, daphne_url,
                                                             client_for):
    from webapp.editing.models import EditSession
    from webapp.jobs.models import Job

    sample, vector = studio.samples[1], studio.vector
    headers = session_headers(client_for, studio.users.artist)
    rows_before = EditSession.objects.count(), Job.objects.count()

    async def slide():
        async with open_socket(daphne_url, f"/ws/apply/{sample.pk}/", headers) as socket:
            await socket.send(json.dumps({"type": "apply", "seq": 7, "vectors": [
                {"vector_id": vector.pk, "scale": 2.0}]}))
            moved = await next_of(socket, "apply.image", timeout=TIMEOUT)
            await socket.send(json.dumps({"type": "apply", "seq": 8, "vectors": [
                {"vector_id": vector.pk + 1000, "scale": 1.0}]}))
            refused = await next_of(socket, "error", timeout=TIMEOUT)
            await socket.send(json.dumps({"type": "apply", "seq": 9, "vectors": [
                {"vector_id": vector.pk, "scale": -2.0}]}))
            return moved, refused, await next_of(socket, "apply.image", timeout=TIMEOUT)

    moved, refused, back = asyncio.run(slide())
    assert moved["seq"] == 7 and moved["sample"] == sample.pk and moved["worker_ms"] > 0
    assert refused["seq"] == 8 and f"no edit vector #{vector.pk + 1000}" in refused["error"]
    assert back["seq"] == 9  # the socket stayed open after the refusal
    for answer, scale in ((moved, 2.0), (back, -2.0)):
        got, want = jpeg_pixels(answer["image"]), engine_picture(studio, tiny_models, sample, scale)
        other = engine_picture(studio, tiny_models, sample, -scale)
        # JPEG's loss on a grainy 32² picture is ~5 levels; the opposite scale's picture is ~78 levels away.
        assert np.abs(got - want).mean() < 15 < np.abs(got - other).mean()
    assert (EditSession.objects.count(), Job.objects.count()) == rows_before  # nothing stored per position


class Broker:
    """Stands in for the Celery hop only: positions go onto their Redis lists as in the studio, and the message that
    would wake a worker is recorded with the position it was sent for; the test then runs the real worker task for
    one (``deliver``), as the worker would."""

    def __init__(self):
        self.keys: list[str] = []
        self.requests: list[dict] = []  # the position each wake-up was sent for

    def wake(self, batch_key: str) -> None:
        from webapp.realtime.rooms import sync_redis

        self.keys.append(batch_key)
        self.requests.append(json.loads(sync_redis().lrange(batch_key, -1, -1)[0]))

    async def queued(self, count: int, timeout: float = 10) -> None:
        """Wait until the consumer has queued ``count`` positions (it queues from a thread of its own)."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            assert time.monotonic() < deadline, f"{len(self.requests)} positions queued, not {count}"
            await asyncio.sleep(0.01)

    async def deliver(self, index: int) -> str:
        """Run the worker task that the ``index``-th wake-up message would run."""
        from gpu_worker.tasks import live_apply

        return await in_thread(live_apply, self.keys[index])


async def in_thread(function, *args):
    """``function(*args)`` in a thread, as a worker or another process would run it, closing the database
    connection it opened (PostgreSQL keeps the test database while one is open)."""
    from django.db import connection

    def run():
        try:
            return function(*args)
        finally:
            connection.close()

    return await asyncio.to_thread(run)


def forget_live_positions() -> None:
    from django.conf import settings

    from webapp.realtime.rooms import sync_redis

    client = sync_redis()
    for key in client.scan_iter(f"{settings.STUDIO_KEY_PREFIX}:live-apply:*"):
        client.delete(key)


@pytest.fixture
def broker(monkeypatch) -> Broker:
    """Row ids repeat from test to test: no position of another test may wait in a list."""
    from webapp.editing import services

    recorder = Broker()
    monkeypatch.setattr(services, "wake_live_worker", recorder.wake)
    forget_live_positions()
    yield recorder
    forget_live_positions()


async def connected(user, sample_id: int):
    from channels.testing import WebsocketCommunicator

    from webapp.realtime.consumers import LiveApplyConsumer

    communicator = WebsocketCommunicator(LiveApplyConsumer.as_asgi(), f"/ws/apply/{sample_id}/")
    communicator.scope["user"] = user
    communicator.scope["url_route"] = {"args": (), "kwargs": {"sample_id": sample_id}}
    opened, code = await communicator.connect(timeout=10)
    return communicator, opened, code


def position(seq: int, vector_id: int, scale: float) -> dict:
    return {"type": "apply", "seq": seq, "vectors": [{"vector_id": vector_id, "scale": scale}]}


def test_positions_that_come_while_one_renders_coalesce_to_the_newest(studio, broker, settings):
    settings.STUDIO_LIVE_APPLY_TIMEOUT_SECONDS = 30
    sample, vector = studio.samples[0], studio.vector

    async def scenario():
        socket, opened, _code = await connected(studio.users.artist, sample.pk)
        assert opened
        for seq in (1, 2, 3, 4):
            await socket.send_json_to(position(seq, vector.pk, seq / 2))
        superseded = [await socket.receive_json_from(10) for _ in (2, 3)]  # 2 by 3, 3 by 4
        queued_while_rendering = len(broker.requests)
        assert await broker.deliver(0) == "1 answered"
        first = await socket.receive_json_from(30)
        assert await broker.deliver(1) == "1 answered"
        newest = await socket.receive_json_from(30)
        await socket.disconnect()
        return superseded, queued_while_rendering, first, newest

    superseded, queued_while_rendering, first, newest = asyncio.run(scenario())
    assert [(m["type"], m["seq"]) for m in superseded] == [("apply.superseded", 2), ("apply.superseded", 3)]
    assert queued_while_rendering == 1  # one position with a worker at a time
    assert (first["type"], first["seq"]) == ("apply.image", 1)
    assert (newest["type"], newest["seq"]) == ("apply.image", 4)
    assert [r["seq"] for r in broker.requests] == [1, 4] and broker.requests[1]["vectors"][0]["scale"] == 2.0


def test_a_position_no_worker_answers_times_out_and_the_next_goes(studio, broker, settings):
    from webapp.realtime.groups import reply

    # Long enough for the test to hand the next position to the worker before it is too old to render as well.
    settings.STUDIO_LIVE_APPLY_TIMEOUT_SECONDS = 2
    sample, vector = studio.samples[0], studio.vector

    async def scenario():
        socket, _opened, _code = await connected(studio.users.artist, sample.pk)
        await socket.send_json_to(position(1, vector.pk, 1.0))
        await socket.send_json_to(position(2, vector.pk, 1.5))  # waits behind 1
        timed_out = await socket.receive_json_from(10)
        await broker.queued(2)  # the socket went on with 2
        lost = broker.requests[0]  # its worker answers after all: the socket answered it already, and drops it
        await asyncio.to_thread(reply, lost["reply_to"], {"type": "apply.image", "ticket": lost["ticket"],
                                                          "seq": 1, "image": "data:,"})
        taken = await broker.deliver(1)  # 1 is still in the list, too old to render
        answer = await socket.receive_json_from(30)
        nothing_else = await socket.receive_nothing(0.5)
        await socket.disconnect()
        return timed_out, taken, answer, nothing_else

    timed_out, taken, answer, nothing_else = asyncio.run(scenario())
    assert timed_out["type"] == "error" and timed_out["seq"] == 1 and "no worker answered" in timed_out["error"]
    assert taken == "1 answered" and (answer["type"], answer["seq"]) == ("apply.image", 2) and nothing_else


def test_positions_of_several_sliders_share_one_forward_pass(studio, tiny_models, broker):
    """Two users' sliders (two samples) waiting at once: the first wake-up renders both, the second finds none."""

    async def scenario():
        first, _opened, _code = await connected(studio.users.artist, studio.samples[0].pk)
        second, _opened, _code = await connected(studio.users.admin, studio.samples[1].pk)
        await first.send_json_to(position(1, studio.vector.pk, 2.0))
        await second.send_json_to(position(1, studio.vector.pk, -2.0))
        await broker.queued(2)
        taken = [await broker.deliver(0), await broker.deliver(1)]
        answers = [await first.receive_json_from(30), await second.receive_json_from(30)]
        for socket in (first, second):
            await socket.disconnect()
        return taken, answers

    taken, answers = asyncio.run(scenario())
    assert taken == ["2 answered", "none waiting"]
    assert [(a["type"], a["batch_size"]) for a in answers] == [("apply.image", 2), ("apply.image", 2)]
    for answer, sample, scale in zip(answers, studio.samples, (2.0, -2.0)):  # each its own picture, in one pass
        got = jpeg_pixels(answer["image"])
        assert np.abs(got - engine_picture(studio, tiny_models, sample, scale)).mean() < 15
        assert np.abs(got - engine_picture(studio, tiny_models, sample, -scale)).mean() > 15


def test_a_live_picture_larger_than_the_preview_size_comes_scaled_down(studio, tiny_models, broker, settings):
    """``STUDIO_LIVE_APPLY_MAX_SIZE`` below the tiny generator's 32²: the answer is the engine's picture, area-averaged
    to 16²."""
    settings.STUDIO_LIVE_APPLY_MAX_SIZE = 16
    sample = studio.samples[0]

    async def scenario():
        socket, _opened, _code = await connected(studio.users.artist, sample.pk)
        await socket.send_json_to(position(1, studio.vector.pk, 2.0))
        await broker.queued(1)
        await broker.deliver(0)
        answer = await socket.receive_json_from(30)
        await socket.disconnect()
        return answer

    answer = asyncio.run(scenario())
    got = jpeg_pixels(answer["image"])
    full = torch.from_numpy(engine_picture(studio, tiny_models, sample, 2.0)).permute(2, 0, 1)
    want = torch.nn.functional.avg_pool2d(full[None], 2)[0].permute(1, 2, 0).numpy()
    assert got.shape == (16, 16, 3) and np.abs(got - want).mean() < 15


@pytest.mark.parametrize("message, reason", [
    ({"type": "apply", "vectors": [{"vector_id": 1, "scale": 1}]}, "seq: Field required"),
    ({"type": "apply", "seq": -1, "vectors": [{"vector_id": 1, "scale": 1}]}, "seq: Input should be greater"),
    ({"type": "apply", "seq": 1, "vectors": []}, "vectors: List should have at least 1 item"),
    ({"type": "apply", "seq": 1, "vectors": "all"}, "vectors: Input should be a valid list"),
    ({"type": "apply", "seq": 1, "vectors": [{"vector_id": 1, "scale": 1e6}]}, "vectors.0.scale: Input should be less"),
    ({"type": "apply", "seq": 1, "vectors": [{"vector_id": 0, "scale": 1}]}, "vectors.0.vector_id"),
    ({"type": "apply", "seq": 1, "vectors": [{"vector_id": 1, "scale": 1}] * 33}, "vectors: List should have at most"),
    ({"type": "apply", "seq": 1, "vectors": [{"vector_id": 999999, "scale": 1}]}, "there is no edit vector #999999"),
])
def test_bad_positions_are_refused_with_their_seq_and_the_socket_stays(studio, broker, message, reason):
    async def scenario():
        socket, _opened, _code = await connected(studio.users.artist, studio.samples[0].pk)
        await socket.send_json_to(message)
        refused = await socket.receive_json_from(10)
        await socket.send_json_to({"type": "ping"})
        pong = await socket.receive_json_from(10)
        await socket.disconnect()
        return refused, pong

    refused, pong = asyncio.run(scenario())
    assert refused["type"] == "error" and refused["request"] == "apply" and reason in refused["error"], refused
    assert refused["seq"] == message.get("seq") and pong["type"] == "pong" and broker.requests == []


def test_a_sockets_checks_are_remembered_for_its_vectors_and_renewed(studio, django_assert_num_queries,
                                                                       monkeypatch):
    from django.core.exceptions import ValidationError

    from webapp.editing import services

    checks, vector = services.LiveApplyChecks(studio.samples[0].pk), studio.vector.pk
    assert checks.known([(vector, 1.0)], 1) is None
    first = checks.check([(vector, 1.0)], 1)
    with django_assert_num_queries(0):
        second = checks.known([(vector, 2.0)], 2)
    assert second == {**first, "seq": 2, "vectors": [{"vector_id": vector, "scale": 2.0}]}
    assert checks.known([(vector, 1.0), (vector + 1000, 1.0)], 3) is None  # a vector not checked yet
    with pytest.raises(ValidationError, match=f"no edit vector #{vector + 1000}"):
        checks.check([(vector + 1000, 1.0)], 3)
    assert checks.known([(vector, 1.0)], 4) is not None  # a refused check forgets nothing
    monkeypatch.setattr(services, "LIVE_APPLY_RECHECK_SECONDS", 0.0)
    assert checks.known([(vector, 1.0)], 5) is None  # too old: checked again


def test_a_vector_deleted_while_its_slider_moves_is_refused_by_the_worker(studio, broker):
    """The socket builds the second position from what it checked for the first; the worker reads the rows again."""
    from webapp.editing.models import EditVector

    async def scenario():
        socket, _opened, _code = await connected(studio.users.artist, studio.samples[0].pk)
        await socket.send_json_to(position(1, studio.vector.pk, 1.0))
        await broker.queued(1)
        assert await broker.deliver(0) == "1 answered"
        shown = await socket.receive_json_from(30)
        await in_thread(EditVector.objects.filter(pk=studio.vector.pk).delete)
        await socket.send_json_to(position(2, studio.vector.pk, 1.5))
        await broker.queued(2)
        assert await broker.deliver(1) == "1 answered"
        refused = await socket.receive_json_from(30)
        await socket.disconnect()
        return shown, refused

    shown, refused = asyncio.run(scenario())
    assert (shown["type"], shown["seq"]) == ("apply.image", 1)
    assert (refused["type"], refused["seq"]) == ("error", 2)
    assert f"edit vectors [{studio.vector.pk}] were deleted after the slider moved" in refused["error"]


@pytest.mark.parametrize("waiting", [1, 6])
def test_a_batch_of_positions_is_read_in_three_queries(studio, django_assert_num_queries, waiting):
    """However many positions a worker takes at once: one query for their samples, one for their branches, one for
    their vectors. A position whose vector is gone gets its own error; the others are drawn."""
    from django.core.exceptions import ValidationError

    from webapp.editing.selectors import live_apply_inputs

    segmentation = studio.segmentation.pk
    requests = [{"sample_id": studio.samples[i % 2].pk, "segmentation_id": segmentation,
                 "vectors": [{"vector_id": studio.vector.pk, "scale": 0.5 * i}]} for i in range(waiting)]
    requests.append({**requests[0], "vectors": [{"vector_id": studio.vector.pk + 1000, "scale": 1.0}]})
    with django_assert_num_queries(3):
        inputs = live_apply_inputs(requests)
        drawn = [(sample.dataset.generator.pk, [(row.pk, scale) for row, scale in vectors])
                 for sample, _segmentation, vectors in inputs[:-1]]
    assert drawn == [(studio.samples[0].dataset.generator.pk, [(studio.vector.pk, 0.5 * i)]) for i in range(waiting)]
    assert [sample.pk for sample, _s, _v in inputs[:-1]] == [studio.samples[i % 2].pk for i in range(waiting)]
    assert isinstance(inputs[-1], ValidationError)
    assert f"edit vectors [{studio.vector.pk + 1000}] were deleted after the slider moved" in str(inputs[-1])


def test_a_sample_without_a_latent_is_refused(studio, broker):
    from editor_core.images import image_png
    from webapp.datasets import services as datasets
    from webapp.datasets.models import Sample

    photo = datasets.add_sample(studio.dataset, source=Sample.Source.UPLOADED,
                                image_png=image_png(torch.zeros(3, 32, 32)))

    async def scenario():
        socket, _opened, _code = await connected(studio.users.artist, photo.pk)
        await socket.send_json_to(position(3, studio.vector.pk, 1.0))
        reply = await socket.receive_json_from(10)
        await socket.disconnect()
        return reply

    refused = asyncio.run(scenario())
    assert refused["seq"] == 3 and "has no latent yet: embed" in refused["error"] and broker.requests == []


def test_only_those_who_edit_may_open_a_live_apply_socket(studio):
    async def code_for(user, sample_id):
        socket, opened, code = await connected(user, sample_id)
        if opened:
            await socket.disconnect()
        return opened, code

    assert asyncio.run(code_for(studio.users.annotator, studio.samples[0].pk)) == (False, 4403)
    assert asyncio.run(code_for(studio.users.artist, 999999)) == (False, 4404)
    assert asyncio.run(code_for(studio.users.artist, studio.samples[0].pk))[0]
