import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runsToServerOps, serverOpToRuns, serverOpsToRuns } from '../../frontend/js/canvas/wire.js';

test('runs become row polygons, split at row ends', () => {
  const ops = runsToServerOps([[3, 6, 2]], 5); // pixels 3,4 | 5..8
  assert.deepEqual(ops, [
    { op: 'polygon', class: 2, points: [[3, 0], [4, 0], [3, 0]] },
    { op: 'polygon', class: 2, points: [[0, 1], [3, 1], [0, 1]] },
  ]);
});

test('row polygons decode back to exactly the same runs', () => {
  const width = 7;
  const runs = [[0, 3, 1], [5, 9, 4], [20, 1, 0]];
  const decoded = runsToServerOps(runs, width).flatMap((op) => serverOpToRuns(op, width, 3));
  const flat = (list) => list.flatMap(([s, l, c]) => Array.from({ length: l }, (_, k) => [s + k, c]));
  assert.deepEqual(flat(decoded), flat(runs));
});

test('foreign stroke and polygon ops rasterise around Pillow pixel centres', () => {
  const stroke = serverOpToRuns({ op: 'stroke', class: 3, radius: 0.5, points: [[2, 1]] }, 5, 3);
  assert.deepEqual(stroke, [[1 * 5 + 2, 1, 3]]);
  const square = serverOpToRuns({ op: 'polygon', class: 1, points: [[1, 1], [3, 1], [3, 3], [1, 3]] }, 6, 6);
  assert.ok(square.length >= 2);
  assert.throws(() => serverOpToRuns({ op: 'blur', class: 1, points: [] }, 4, 4), /unknown server operation/);
});

test('several server ops merge into one op where later ops win', () => {
  const runs = serverOpsToRuns([
    { op: 'polygon', class: 1, points: [[0, 0], [3, 0], [0, 0]] },
    { op: 'polygon', class: 2, points: [[2, 0], [2, 0], [2, 0]] },
  ], 4, 1);
  assert.deepEqual(runs, [[0, 2, 1], [2, 1, 2], [3, 1, 1]]);
});

import { parseClientId } from '../../frontend/js/rooms/annotation-room.js';

test('client ids carry session, op and part; other clients’ ids are not ours', () => {
  assert.deepEqual(parseClientId('ab12cd:17:2/5'), { session: 'ab12cd', opId: 17, part: 2, parts: 5 });
  assert.equal(parseClientId('script-client'), null);
  assert.equal(parseClientId(undefined), null);
});
