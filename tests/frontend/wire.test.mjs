import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_RUNS_PER_OP, runsToServerOps, serverOpToRuns, serverOpsToRuns } from '../../frontend/js/canvas/wire.js';
import { floodRuns, polygonRuns } from '../../frontend/js/canvas/fill.js';
import { LabelMask } from '../../frontend/js/canvas/mask.js';

test('runs go as runs ops, in order, at most maxRuns per op', () => {
  const runs = [[0, 3, 1], [5, 9, 4], [20, 1, 0], [22, 2, 2], [30, 1, 1]];
  assert.deepEqual(runsToServerOps(runs, 2), [
    { op: 'runs', runs: [[0, 3, 1], [5, 9, 4]] },
    { op: 'runs', runs: [[20, 1, 0], [22, 2, 2]] },
    { op: 'runs', runs: [[30, 1, 1]] },
  ]);
  assert.deepEqual(runsToServerOps(runs), [{ op: 'runs', runs }]);
  assert.equal(runsToServerOps(runs)[0].runs === runs, false); // a copy: later edits of the op cannot leak out
  assert.deepEqual(runsToServerOps([]), []);
  assert.equal(MAX_RUNS_PER_OP, 4096);
});

test('runs ops decode back to exactly the same runs (flood and polygon fills across rows)', () => {
  const width = 7;
  const mask = new LabelMask(width, 5);
  mask.apply(polygonRuns(width, 5, [[1, 1], [4, 2.5], [1, 4]], 2));
  const fill = floodRuns(mask, 0, 0, 3); // the background around the triangle: runs that wrap rows
  assert.ok(fill.some(([start, length]) => (start % width) + length > width), 'a run continues on the next row');
  const decoded = runsToServerOps(fill, 3).flatMap((op) => serverOpToRuns(op, width, 5));
  assert.deepEqual(decoded, fill);
});

test('runs ops never write past the mask', () => {
  assert.deepEqual(serverOpToRuns({ op: 'runs', runs: [[2, 5, 1], [9, 1, 2]] }, 3, 2), [[2, 4, 1]]);
});

test('row polygons (older clients, scripts) decode to exactly their pixels', () => {
  const width = 5;
  const row = (x0, x1, y, label) => ({ op: 'polygon', class: label, points: [[x0, y], [x1, y], [x0, y]] });
  assert.deepEqual(serverOpToRuns(row(3, 4, 0, 2), width, 2), [[3, 2, 2]]);
  assert.deepEqual(serverOpToRuns(row(0, 3, 1, 2), width, 2), [[5, 4, 2]]);
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
