import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LiveApply, Superseded } from '../../frontend/js/live-apply.js';

/** A socket that records what is sent and lets the test play the server (and drop the connection). */
function scriptedSocket() {
  const socket = { sent: [], queue: [], closed: false, handlers: null, open: true };
  socket.send = (message) => { (socket.open ? socket.sent : socket.queue).push(message); };
  socket.close = () => { socket.closed = true; };
  socket.reconnect = () => {
    socket.open = true;
    socket.handlers.onOpen(true); // StudioSocket: onOpen runs before it flushes its queue
    socket.sent.push(...socket.queue.splice(0));
  };
  const open = (path, handlers) => { socket.path = path; socket.handlers = handlers; return socket; };
  return { socket, open };
}

test('each position is answered by its own seq: a picture, a refusal, or superseded', async () => {
  const { socket, open } = scriptedSocket();
  const live = new LiveApply(12, open);
  assert.equal(socket.path, '/ws/apply/12/');
  const first = live.apply([{ vector_id: 3, scale: 1.5 }]);
  const second = live.apply([{ vector_id: 3, scale: 2 }]);
  const third = live.apply([{ vector_id: 99, scale: 1 }]);
  assert.deepEqual(socket.sent.map((m) => [m.type, m.seq]), [['apply', 1], ['apply', 2], ['apply', 3]]);
  socket.handlers.onMessage({ type: 'apply.superseded', seq: 2 });
  socket.handlers.onMessage({ type: 'error', request: 'apply', seq: 3, error: 'there is no edit vector #99' });
  socket.handlers.onMessage({ type: 'error', request: 'cursor', seq: 1, error: 'not about apply' });
  socket.handlers.onMessage({ type: 'apply.image', seq: 1, image: 'data:image/jpeg;base64,/9j/', worker_ms: 4 });
  assert.equal((await first).image, 'data:image/jpeg;base64,/9j/');
  await assert.rejects(second, Superseded);
  await assert.rejects(third, /no edit vector #99/);
  assert.equal(live.unanswered.size, 0);
});

test('after a reconnect, unanswered positions go again, once each', async () => {
  const { socket, open } = scriptedSocket();
  const live = new LiveApply(5, open);
  const answered = live.apply([{ vector_id: 1, scale: 1 }]);
  const lost = live.apply([{ vector_id: 1, scale: 2 }]); // sent; the connection drops before its answer
  socket.handlers.onMessage({ type: 'apply.image', seq: 1, image: 'a' });
  socket.open = false;
  const queued = live.apply([{ vector_id: 1, scale: 3 }]); // sent while down: the socket queues it
  socket.reconnect();
  assert.deepEqual(socket.sent.map((m) => m.seq), [1, 2, 2, 3]);
  socket.handlers.onMessage({ type: 'apply.image', seq: 2, image: 'b' });
  socket.handlers.onMessage({ type: 'apply.image', seq: 3, image: 'c' });
  assert.deepEqual(await Promise.all([answered, lost, queued]).then((r) => r.map((m) => m.image)), ['a', 'b', 'c']);
});

test('a refused socket fails what waits; closing supersedes it', async () => {
  const { socket, open } = scriptedSocket();
  const live = new LiveApply(5, open);
  const refused = live.apply([{ vector_id: 1, scale: 1 }]);
  socket.handlers.onFatal('the server closed the live connection (code 4403)');
  await assert.rejects(refused, /4403/);
  await assert.rejects(live.apply([{ vector_id: 1, scale: 2 }]), /4403/); // at once: no socket will answer it
  const other = scriptedSocket();
  const leaving = new LiveApply(6, other.open);
  const left = leaving.apply([{ vector_id: 1, scale: 1 }]);
  leaving.close();
  await assert.rejects(left, Superseded);
  assert.ok(other.socket.closed);
});
