"""Websocket consumers: live annotation rooms, job progress, edit previews.

Every socket needs a logged-in user with a studio role (checked on connect). Client messages are JSON objects with a
``type``; a malformed or refused message (not JSON, nested too deeply, a non-finite number, a bad value) gets
``{"type": "error", "error": …}`` and the socket stays open. However a consumer ends (the client leaves, the network
drops, a handler crashes, Daphne cancels it), ``release`` runs once: presence entries and background tasks go with it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import time

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError

from webapp.accounts import roles
from webapp.errors import Conflict
from webapp.realtime import rooms
from webapp.realtime.groups import annotation_group, edit_group, job_group

log = logging.getLogger(__name__)
CLOSE_UNAUTHENTICATED, CLOSE_FORBIDDEN, CLOSE_NOT_FOUND = 4401, 4403, 4404
MAX_MESSAGE_BYTES = 256 * 1024
MAX_MESSAGE_DEPTH = 16  # the deepest message a client sends (an op's runs) is 4 levels


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number the studio accepts: send finite numbers")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as infinity
        raise ValueError(f"{text} is too large a number: send finite numbers")
    return value


def _too_deep(value, limit: int) -> bool:
    """Whether ``value`` nests lists/objects deeper than ``limit`` (iterative: no recursion on hostile input)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def parse_message(text: str) -> dict:
    """A client's text frame as a JSON object with a string ``type``; ValueError with a readable reason otherwise.
    NaN, Infinity and numbers too large for a float are refused: other clients get what a message carries."""
    try:
        message = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(f"message is nested too deeply (at most {MAX_MESSAGE_DEPTH} levels)") from None
    except ValueError as exc:
        raise ValueError(f"message is not valid JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValueError('a message must be a JSON object with a string "type"')
    if _too_deep(message, MAX_MESSAGE_DEPTH):
        raise ValueError(f"message is nested too deeply (at most {MAX_MESSAGE_DEPTH} levels)")
    return message


class StudioConsumer(AsyncJsonWebsocketConsumer):
    """Auth on connect, one group, and error events instead of dropped sockets for bad messages."""

    permission = roles.VIEW

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:  # also when a handler raised or Daphne cancelled us: no disconnect() comes then
            await asyncio.shield(self.release_once())

    async def connect(self):
        self.user = self.scope["user"]
        self.groups_joined: list[str] = []
        self.released = False
        if not self.user.is_authenticated:
            return await self.close(code=CLOSE_UNAUTHENTICATED)
        if not await database_sync_to_async(self.user.has_perm)(self.permission):
            return await self.close(code=CLOSE_FORBIDDEN)
        try:
            groups = await database_sync_to_async(self.authorize)()
        except ObjectDoesNotExist:
            return await self.close(code=CLOSE_NOT_FOUND)
        except PermissionDenied:
            return await self.close(code=CLOSE_FORBIDDEN)
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.append(group)
        await self.accept()
        await self.joined()

    async def disconnect(self, code):
        await self.release_once()

    async def release_once(self) -> None:
        if getattr(self, "released", True):  # never connected, or released already
            return
        self.released = True
        try:
            await self.release()
        except Exception:  # Redis or the database away: the presence entries expire on their own
            log.exception("releasing a websocket of %s failed", getattr(self, "user", None))
        for group in self.groups_joined:
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception:
                log.exception("leaving the channel group %s failed", group)

    async def release(self) -> None:
        """Undo what ``connect``/``joined`` set up (presence, background tasks). Runs once, however the socket ended."""

    def authorize(self) -> list[str]:
        """Load what the socket is about (sync, ORM); return the groups to join. Raise to refuse."""
        raise NotImplementedError

    async def joined(self) -> None:
        """Send the initial state."""

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is None:
            return await self.error("send JSON text messages, not binary ones")
        if len(text_data) > MAX_MESSAGE_BYTES:
            return await self.error(f"message larger than {MAX_MESSAGE_BYTES} bytes")
        try:
            message = parse_message(text_data)
        except ValueError as exc:
            return await self.error(str(exc))
        handler = getattr(self, "on_" + message["type"].replace(".", "_"), None)
        if handler is None:
            return await self.error(f"unknown message type {message['type']!r}", request=message["type"])
        try:
            await handler(message)
        except ValidationError as exc:
            await self.error(" ".join(exc.messages), request=message["type"])
        except PermissionDenied as exc:
            await self.error(str(exc) or "forbidden", request=message["type"])
        except Conflict as exc:
            await self.error(exc.detail, request=message["type"], **exc.current)
        except Exception:  # a bug must not take the socket (and the user's room) down with it
            log.exception("websocket handler %s failed", message["type"])
            await self.error("internal error while handling the message", request=message["type"])

    async def error(self, text: str, **extra) -> None:
        await self.send_json({"type": "error", "error": text, **extra})

    async def on_ping(self, message):
        await self.send_json({"type": "pong", "time": time.time()})

    async def forward(self, event):
        """Channel-layer events are sent to the client as they are."""
        await self.send_json(event)


class AnnotationConsumer(StudioConsumer):
    """``ws/annotate/<sample_id>/``: presence, cursors, painting operations in server order, saves.

    Client → server: ``op`` {op: runs|stroke|polygon …, client_id}, ``cursor`` {x, y}, ``save``, ``ping``.
    Server → client: ``state`` (on join: version, pending ops), ``presence``, ``op`` {seq, op, user, client_id},
    ``cursor``, ``saved`` {version, status, reason, author, seq, mask_changed: a flush of the room's ops carries
    their last seq; any other new version (REST save, submit, review, pre-label, restore) seq null}, ``error``,
    ``pong``.
    """

    async def connect(self):
        self.sample_id = int(self.scope["url_route"]["kwargs"]["sample_id"])
        self.redis = rooms.async_redis()
        self.flush_task: asyncio.Task | None = None
        self.heartbeat_task: asyncio.Task | None = None
        self.presence_sent: frozenset = frozenset()  # channels of the presence list this client got last
        await super().connect()

    def authorize(self) -> list[str]:
        from webapp.datasets.models import Sample

        self.sample = Sample.objects.select_related("dataset__schema").get(pk=self.sample_id)
        self.num_classes = self.sample.dataset.schema.num_classes
        self.can_paint = self.user.has_perm(roles.ANNOTATE)
        return [annotation_group(self.sample_id)]

    async def joined(self):
        member = {"user_id": self.user.pk, "username": self.user.get_username(), "channel": self.channel_name,
                  "can_paint": self.can_paint, "since": time.time()}
        present = await rooms.join(self.redis, self.sample.dataset_id, self.sample_id, self.channel_name, member)
        self.heartbeat_task = asyncio.create_task(self._renew_presence(member))
        pending = await rooms.pending_ops(self.redis, self.sample_id)
        current = await database_sync_to_async(self._current)()
        self.presence_sent = self._channels(present)
        await self.send_json({"type": "state", "sample": self.sample_id, **current, "pending": pending,
                              "you": member, "presence": present})
        await self.channel_layer.group_send(annotation_group(self.sample_id), {"type": "presence", "users": present})
        if pending:
            self.schedule_flush()

    async def _renew_presence(self, member: dict) -> None:
        """While this socket is open, renew its presence entry (it expires if this process dies). When the renewal
        removed expired entries (their Daphne crashed) or had to put this one back, the whole room hears the new
        list; when someone else removed them (a join, ``GET /datasets/{id}/presence``), this client still does."""
        while True:
            await asyncio.sleep(rooms.heartbeat_seconds())
            try:
                changed, present = await rooms.touch(self.redis, self.sample.dataset_id, self.sample_id,
                                                     self.channel_name, member)
                if changed:
                    await self.channel_layer.group_send(annotation_group(self.sample_id),
                                                        {"type": "presence", "users": present})
                elif self._channels(present) != self.presence_sent:
                    await self.presence({"type": "presence", "users": present})
            except Exception:  # Redis away for a moment: try again at the next beat, keep the socket
                log.exception("renewing the presence in the room of sample %s failed", self.sample_id)

    @staticmethod
    def _channels(users: list[dict]) -> frozenset:
        return frozenset(user["channel"] for user in users)

    def _current(self) -> dict:
        """The stored annotation's version, status and author (the room's clients show these)."""
        from webapp.datasets.services import annotation_out

        current = annotation_out(self.sample)
        return {key: current[key] for key in ("version", "status", "author")}

    async def release(self):
        for task in (self.heartbeat_task, self.flush_task):
            if task is not None:
                task.cancel()  # and wait until it has stopped: no renewal may land after the leave below
                await asyncio.wait([task])
        try:
            if hasattr(self, "sample"):
                present = await rooms.leave(self.redis, self.sample.dataset_id, self.sample_id, self.channel_name)
                await self.channel_layer.group_send(annotation_group(self.sample_id), {"type": "presence",
                                                                                       "users": present})
                await self.flush_now()  # whatever this painter sent is stored before the socket is gone
        finally:
            await self.redis.aclose()

    def require_painter(self) -> None:
        if not self.can_paint:
            raise PermissionDenied("your role may look at annotations but not paint them")

    async def on_op(self, message):
        from webapp.datasets.masks import validate_op

        self.require_painter()
        client_id = str(message.get("client_id", ""))[:64]
        try:
            op = validate_op(message.get("op"), (self.sample.width, self.sample.height), self.num_classes)
        except ValidationError as exc:  # the client_id tells the sender which of its operations was refused
            return await self.error(" ".join(exc.messages), request="op", client_id=client_id)
        entry = {"op": op, "user_id": self.user.pk, "username": self.user.get_username(), "client_id": client_id}
        seq = await rooms.append_op(self.redis, self.sample_id, entry)
        await self.channel_layer.group_send(annotation_group(self.sample_id), {"type": "op", "seq": seq, **entry})
        self.schedule_flush()

    async def on_cursor(self, message):
        x, y = message.get("x"), message.get("y")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y)):
            raise ValidationError("a cursor message needs numeric x and y")
        width, height = self.sample.width, self.sample.height
        if not (-width <= x <= 2 * width and -height <= y <= 2 * height):  # the pointer may be off the picture
            raise ValidationError(f"cursor ({x}, {y}) is far outside the {width}×{height} image")
        await self.channel_layer.group_send(annotation_group(self.sample_id), {
            "type": "cursor", "user_id": self.user.pk, "username": self.user.get_username(), "x": float(x),
            "y": float(y), "sender": self.channel_name})

    async def on_save(self, message):
        """Store the queued operations now as a 'save' revision (the client's "save" button; autosave would store
        them a moment later, as an 'autosave' one)."""
        self.require_painter()
        state = await self.flush_now(reason="save")
        if state is None:
            await self.send_json({"type": "saved", **await database_sync_to_async(self._current)(), "seq": None,
                                  "mask_changed": False})

    def schedule_flush(self) -> None:
        if self.flush_task is None or self.flush_task.done():
            self.flush_task = asyncio.create_task(self._flush_later())

    async def _flush_later(self):
        await asyncio.sleep(settings.STUDIO_AUTOSAVE_SECONDS)
        await self.flush_now()

    async def flush_now(self, reason: str = "autosave") -> dict | None:
        from webapp.datasets.services import save_live_operations

        try:
            state = await database_sync_to_async(save_live_operations)(self.sample_id, self.user, reason)
        except Conflict as exc:
            await self.error(exc.detail, request="save")
            return None
        if state is not None:
            await self.channel_layer.group_send(annotation_group(self.sample_id), {"type": "saved", **state})
        return state

    async def op(self, event):
        await self.send_json(event)

    async def presence(self, event):
        self.presence_sent = self._channels(event["users"])  # what this client believes: the renewal compares
        await self.send_json(event)

    async def saved(self, event):
        await self.send_json(event)

    async def cursor(self, event):
        if event["sender"] != self.channel_name:
            await self.send_json({k: v for k, v in event.items() if k != "sender"})


class JobConsumer(StudioConsumer):
    """``ws/jobs/<job_id>/``: ``job.status`` (on join and on every change) and ``job.progress`` events; the client
    may send ``cancel``."""

    permission = "jobs.view_job"

    def authorize(self) -> list[str]:
        from webapp.jobs.services import visible_jobs

        self.job = visible_jobs(self.user).get(pk=int(self.scope["url_route"]["kwargs"]["job_id"]))
        return [job_group(self.job.pk)]

    async def joined(self):
        from webapp.jobs.services import job_payload

        await database_sync_to_async(self.job.refresh_from_db)()
        await self.send_json({"type": "job.status", **await database_sync_to_async(job_payload)(self.job)})

    async def on_cancel(self, message):
        from webapp.jobs.services import cancel

        await database_sync_to_async(cancel)(self.job, self.user)

    job_status = job_progress = StudioConsumer.forward


class EditConsumer(StudioConsumer):
    """``ws/edits/<session_id>/``: ``edit.preview`` {step, image, mask} every k optimisation steps,
    ``edit.result``, and the edit job's ``job.status`` / ``job.progress``."""

    permission = roles.EDIT_IMAGES

    def authorize(self) -> list[str]:
        from webapp.editing.services import visible_sessions

        self.session = visible_sessions(self.user).get(pk=int(self.scope["url_route"]["kwargs"]["session_id"]))
        return [edit_group(self.session.pk)] + ([job_group(self.session.job_id)] if self.session.job_id else [])

    async def joined(self):
        await self.send_json({"type": "edit.state", **await database_sync_to_async(self.current_state)()})

    def current_state(self) -> dict:
        """The session as it is now: read again after the groups are joined, so that a job that finished between
        ``authorize`` and the join (its event sent to no one here) is reported finished, with its result."""
        from webapp.editing.services import session_out, visible_sessions

        self.session = visible_sessions(self.user).get(pk=self.session.pk)
        return json.loads(json.dumps(session_out(self.session), default=str))

    async def on_cancel(self, message):
        from webapp.jobs.services import cancel

        if self.session.job is None:
            raise ValidationError("this edit has no job to cancel")
        await database_sync_to_async(cancel)(self.session.job, self.user)

    edit_preview = edit_result = job_status = job_progress = StudioConsumer.forward


class LiveApplyConsumer(StudioConsumer):
    """``ws/apply/<sample_id>/``: library vectors applied to one sample as its sliders move (mode 1, the image alone
    as a JPEG, stored nowhere), with no edit session or job row per position.

    Client → server: ``apply`` {seq, vectors: [{vector_id, scale}]}, ``ping``.
    Server → client, one answer per ``apply``: ``apply.image`` {seq, sample, image (a JPEG data URL), worker_ms,
    batch_size}, ``apply.superseded`` {seq} (a newer position came while it waited), or ``error`` {request: "apply",
    seq, error}.
    One position per socket is with a worker at a time; while it renders, the newest waits and supersedes any older
    one, so no worker renders a position the user has moved past. A position no worker answers within
    ``STUDIO_LIVE_APPLY_TIMEOUT_SECONDS`` gets an error, and the socket goes on with the newest.
    """

    permission = roles.EDIT_IMAGES

    def authorize(self) -> list[str]:
        from webapp.datasets.services import visible_samples
        from webapp.editing.services import LiveApplyChecks

        self.sample_id = visible_samples(self.user).values_list("pk", flat=True).get(
            pk=int(self.scope["url_route"]["kwargs"]["sample_id"]))
        self.checks = LiveApplyChecks(self.sample_id)
        self.tickets = 0
        self.in_flight: dict | None = None  # the request a worker has
        self.waiting: dict | None = None  # the newest position that came while it renders
        self.deadline: asyncio.Task | None = None
        return []  # answers come to this socket's own channel

    async def release(self):
        if self.deadline is not None:
            self.deadline.cancel()

    async def on_apply(self, message):
        from pydantic import ValidationError as SchemaError

        from webapp.editing.schemas import LiveApplyIn

        seq = message.get("seq")
        try:
            position = LiveApplyIn.model_validate(message)
            vectors = [(item.vector_id, item.scale) for item in position.vectors]
            request = (self.checks.known(vectors, position.seq)
                       or await database_sync_to_async(self.checks.check)(vectors, position.seq))
        except SchemaError as exc:
            return await self.error(schema_error_text(exc), request="apply", seq=seq)
        except (ValidationError, ObjectDoesNotExist) as exc:
            text = " ".join(exc.messages) if isinstance(exc, ValidationError) else "the sample was deleted"
            return await self.error(text, request="apply", seq=seq)
        self.tickets += 1
        request["ticket"] = self.tickets
        if self.in_flight is None:
            return await self._send(request)
        if self.waiting is not None:
            await self.send_json({"type": "apply.superseded", "seq": self.waiting["seq"]})
        self.waiting = request

    async def _send(self, request: dict) -> None:
        from webapp.editing.services import send_live_apply

        self.in_flight = request
        self.deadline = asyncio.create_task(self._answer_late(request["ticket"]))
        try:
            # No database here: a thread of the pool, not the one that Django's connections are kept for.
            await sync_to_async(send_live_apply, thread_sensitive=False)(request, self.channel_name)
        except Exception:  # the broker away: this position fails, the next one tries again
            log.exception("queueing a live apply failed")
            await self._answered(request["ticket"], {"type": "error", "request": "apply", "seq": request["seq"],
                                                     "error": "the studio could not reach its workers' queue"})

    async def _answer_late(self, ticket: int) -> None:
        timeout = settings.STUDIO_LIVE_APPLY_TIMEOUT_SECONDS
        await asyncio.sleep(timeout)
        seq = self.in_flight["seq"] if self.in_flight else None
        self.deadline = None  # this task ends here: nothing must cancel it
        await self._answered(ticket, {"type": "error", "request": "apply", "seq": seq,
                                      "error": f"no worker answered within {timeout:g} s: the interactive queue is "
                                               "busy or its worker stopped"})

    async def _answered(self, ticket: int, answer: dict) -> None:
        """Send the answer of the position with ``ticket`` if it is the one in flight (a late one was answered
        already), once the waiting position is with a worker (it starts rendering while this answer travels)."""
        if self.in_flight is None or self.in_flight["ticket"] != ticket:
            return
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.in_flight = None
        if self.waiting is not None:
            request, self.waiting = self.waiting, None
            await self._send(request)
        await self.send_json(answer)

    async def apply_image(self, event):
        await self._answered(event.pop("ticket"), event)

    async def apply_failed(self, event):
        await self._answered(event["ticket"], {"type": "error", "request": "apply", "seq": event["seq"],
                                               "error": event["error"]})


def schema_error_text(exc) -> str:
    """A pydantic ValidationError as one line: ``where: what`` for each refused field."""
    return "; ".join(f"{'.'.join(str(part) for part in error['loc']) or 'message'}: {error['msg']}"
                     for error in exc.errors())
