import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LabelMask } from '../../frontend/js/canvas/mask.js';
import { SharedMask } from '../../frontend/js/canvas/collab.js';
import { OpHistory } from '../../frontend/js/canvas/history.js';
import { brushRuns } from '../../frontend/js/canvas/brush.js';
import { applyRuns } from '../../frontend/js/canvas/runs.js';

const W = 8;
const H = 1;

test('my pending op shows at once and leaves pending on its echo', () => {
  const shared = new SharedMask(new LabelMask(W, H), 0);
  const { opId } = shared.applyLocal([[0, 2, 1]]);
  assert.deepEqual([...shared.displayed.data].slice(0, 3), [1, 1, 0]);
  assert.deepEqual([...shared.confirmed.data].slice(0, 3), [0, 0, 0]);
  assert.equal(shared.applyServer({ seq: 1, runs: [[0, 2, 1]], mine: true, opId }), 'applied');
  assert.equal(shared.pending.length, 0);
  assert.deepEqual([...shared.confirmed.data].slice(0, 3), [1, 1, 0]);
});

test('a remote op lands under my pending paint until the server orders mine after it', () => {
  const shared = new SharedMask(new LabelMask(W, H));
  const { opId } = shared.applyLocal([[2, 2, 1]]);
  shared.applyServer({ seq: 1, runs: [[0, 4, 2]] });
  assert.deepEqual([...shared.displayed.data].slice(0, 5), [2, 2, 1, 1, 0]);
  shared.applyServer({ seq: 2, runs: [[2, 2, 1]], mine: true, opId });
  assert.deepEqual([...shared.confirmed.data], [...shared.displayed.data]);
});

test('two clients replaying the same server order end with the same mask', () => {
  const a = new SharedMask(new LabelMask(W, H), 0);
  const b = new SharedMask(new LabelMask(W, H), 0);
  const opA = a.applyLocal([[0, 5, 1]]);
  const opB = b.applyLocal([[3, 5, 2]]);
  // The server orders B's op first, then A's.
  const order = [
    { seq: 1, runs: [[3, 5, 2]], author: 'b', opId: opB.opId },
    { seq: 2, runs: [[0, 5, 1]], author: 'a', opId: opA.opId },
  ];
  for (const msg of order) {
    a.applyServer({ ...msg, mine: msg.author === 'a' });
    b.applyServer({ ...msg, mine: msg.author === 'b' });
  }
  assert.deepEqual([...a.displayed.data], [1, 1, 1, 1, 1, 2, 2, 2]);
  assert.deepEqual(a.displayed.data, b.displayed.data);
});

test('stale ops are ignored; an early op waits for the ones before it', () => {
  const shared = new SharedMask(new LabelMask(W, H), 5);
  assert.equal(shared.applyServer({ seq: 5, runs: [[0, 1, 1]] }), 'stale');
  assert.equal(shared.applyServer({ seq: 7, runs: [[0, 2, 7]] }), 'held');
  assert.equal(shared.confirmed.data[0], 0);
  assert.ok(shared.hasGap);
  assert.equal(shared.applyServer({ seq: 6, runs: [[0, 3, 6]] }), 'applied');
  assert.deepEqual([...shared.confirmed.data].slice(0, 4), [7, 7, 6, 0]);
  assert.equal(shared.seq, 7);
  assert.ok(!shared.hasGap);
});

test('an unknown starting seq is set by the first op', () => {
  const shared = new SharedMask(new LabelMask(W, H));
  assert.equal(shared.applyServer({ seq: 41, runs: [[0, 1, 1]] }), 'applied');
  assert.equal(shared.applyServer({ seq: 43, runs: [[0, 1, 1]] }), 'held');
});

test('resync replaces the confirmed mask and keeps my pending ops on top', () => {
  const shared = new SharedMask(new LabelMask(W, H));
  shared.applyLocal([[0, 1, 3]]);
  shared.resync(new LabelMask(W, H, Uint8Array.from([4, 4, 4, 4, 4, 4, 4, 4])), 10);
  assert.equal(shared.seq, 10);
  assert.deepEqual([...shared.displayed.data].slice(0, 2), [3, 4]);
});

test('a rejected op disappears from the display', () => {
  const shared = new SharedMask(new LabelMask(W, H));
  const { opId } = shared.applyLocal([[0, 3, 1]]);
  shared.reject(opId);
  assert.deepEqual([...shared.displayed.data], new Array(W).fill(0));
});

test('per-user undo restores only my pixels that nobody painted over, redo puts them back', () => {
  const data = new Uint8Array(W);
  const history = new OpHistory();
  const mine = brushRuns(W, H, [[0.5, 0.5], [5.5, 0.5]], { size: 1, shape: 'square' }, 1);
  history.push(mine, applyRuns(data, mine));
  applyRuns(data, [[4, 3, 2]]); // a remote stroke over part of mine
  const undo = history.undo(data);
  applyRuns(data, undo);
  assert.deepEqual([...data], [0, 0, 0, 0, 2, 2, 2, 0]);
  assert.ok(history.canRedo && !history.canUndo);
  applyRuns(data, history.redo(data));
  assert.deepEqual([...data], [1, 1, 1, 1, 2, 2, 2, 0]);
  assert.equal(history.redo(data), null);
});

test('a new op clears the redo stack; the history keeps at most `limit` entries', () => {
  const history = new OpHistory(2);
  const data = new Uint8Array(W);
  for (let k = 0; k < 3; k++) history.push([[k, 1, 1]], applyRuns(data, [[k, 1, 1]]));
  assert.equal(history.done.length, 2);
  history.undo(data);
  history.push([[6, 1, 1]], applyRuns(data, [[6, 1, 1]]));
  assert.equal(history.canRedo, false);
});

import { AnnotationRoom } from '../../frontend/js/rooms/annotation-room.js';

// The room's reaction to a refused op, on a real SharedMask (no socket: the method under test never sends).
function roomWithPending() {
  const room = Object.create(AnnotationRoom.prototype);
  const calls = [];
  room.session = 'ab12cd';
  room.shared = new SharedMask(new LabelMask(4, 1), 0);
  room.handlers = { onChange: () => calls.push('change') };
  room.reload = () => calls.push('reload');
  room.shared.applyLocal([[0, 1, 1]]); // op 1
  room.shared.applyLocal([[2, 2, 2]]); // op 2
  return { room, calls };
}

test('a refused op named by its client id is dropped alone, without a reload', () => {
  const { room, calls } = roomWithPending();
  room.refused({ session: 'ab12cd', opId: 2, part: 0, parts: 1 });
  assert.deepEqual(room.shared.pending.map((op) => op.opId), [1]);
  assert.deepEqual([...room.shared.displayed.data], [1, 0, 0, 0]);
  assert.deepEqual(calls, ['change']);
});

test('a refusal without one of my client ids drops every pending op and reloads', () => {
  const { room, calls } = roomWithPending();
  room.refused(null);
  assert.deepEqual(room.shared.pending, []);
  assert.deepEqual([...room.shared.displayed.data], [0, 0, 0, 0]);
  assert.deepEqual(calls, ['change', 'reload']);
});
