import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyRuns, coverageToRuns, guardedRuns, runsRowSpan } from '../../frontend/js/canvas/runs.js';

test('coverageToRuns merges covered neighbours into runs', () => {
  const coverage = Uint8Array.from([0, 1, 1, 0, 1, 0, 0, 1]);
  assert.deepEqual(coverageToRuns(coverage, 5), [[1, 2, 5], [4, 1, 5], [7, 1, 5]]);
});

test('applyRuns writes labels and its inverse restores the mask exactly', () => {
  const data = Uint8Array.from([0, 1, 1, 2, 2, 0]);
  const before = data.slice();
  const inverse = applyRuns(data, [[1, 4, 7]]);
  assert.deepEqual([...data], [0, 7, 7, 7, 7, 0]);
  assert.deepEqual(inverse, [[1, 2, 1], [3, 2, 2]]);
  applyRuns(data, inverse);
  assert.deepEqual(data, before);
});

test('runsRowSpan', () => {
  const runs = [[3, 2, 1], [9, 4, 1]];
  assert.deepEqual(runsRowSpan(runs, 4), { y0: 0, y1: 3 });
  assert.equal(runsRowSpan([], 4), null);
});

test('guardedRuns writes the target only where the expected labels are still there', () => {
  const data = Uint8Array.from([0, 0, 0, 0]);
  const op = [[0, 4, 5]];
  const inverse = applyRuns(data, op);
  data[2] = 9; // someone else painted pixel 2 afterwards
  const undo = guardedRuns(data, inverse, op);
  assert.deepEqual(undo, [[0, 2, 0], [3, 1, 0]]);
});

test('guardedRuns throws when target and expected do not cover the same pixels', () => {
  assert.throws(() => guardedRuns(new Uint8Array(4), [[0, 2, 1]], [[1, 1, 0]]), /not in the expected runs/);
});

import { mergeDisjointRuns } from '../../frontend/js/canvas/runs.js';

test('mergeDisjointRuns sorts the chunks of one stroke into one valid op', () => {
  const merged = mergeDisjointRuns([[10, 2, 1]], [[0, 3, 1], [20, 1, 1]]);
  assert.deepEqual(merged, [[0, 3, 1], [10, 2, 1], [20, 1, 1]]);
});
