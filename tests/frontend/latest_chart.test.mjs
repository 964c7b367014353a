import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LatestOnly } from '../../frontend/js/latest.js';
import { extent, formatTick, linearScale, niceTicks } from '../../frontend/js/chart/scale.js';

function deferred() {
  let resolve;
  const promise = new Promise((r) => { resolve = r; });
  return { promise, resolve };
}

test('LatestOnly: one request in flight, only the newest waiting one is sent, results shown in order', async () => {
  const calls = [];
  const shown = [];
  const pending = [];
  const latest = new LatestOnly((params) => {
    calls.push(params);
    const d = deferred();
    pending.push(d);
    return d.promise;
  }, (result) => shown.push(result));
  latest.request(1);
  latest.request(2);
  latest.request(3);
  assert.deepEqual(calls, [1], 'only the first is sent while it runs');
  pending[0].resolve('r1');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(calls, [1, 3], 'then the newest, skipping 2');
  pending[1].resolve('r3');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(shown, ['r1', 'r3']);
  assert.equal(latest.busy, false);
});

test('LatestOnly reports failures and carries on', async () => {
  const errors = [];
  const latest = new LatestOnly(async (p) => { if (p === 'bad') throw new Error('boom'); return p; },
    () => {}, (e) => errors.push(e.message));
  latest.request('bad');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(errors, ['boom']);
  assert.equal(latest.busy, false);
});

test('niceTicks picks 1-2-5 steps covering the range', () => {
  assert.deepEqual(niceTicks(0, 10, 5), [0, 2, 4, 6, 8, 10]);
  assert.deepEqual(niceTicks(0.13, 0.92, 4), [0.2, 0.4, 0.6, 0.8]);
  assert.deepEqual(niceTicks(3, 3, 2), [2, 3, 4]);
  assert.deepEqual(niceTicks(NaN, 1), []);
});

test('linearScale, extent and formatTick', () => {
  const x = linearScale(0, 10, 100, 200);
  assert.equal(x(5), 150);
  assert.equal(linearScale(1, 1, 0, 10)(1), 5);
  assert.deepEqual(extent([[[0, 3], [1, 1]], [[2, 7]]], 1), [1, 7]);
  assert.equal(formatTick(1200), '1.2k');
  assert.equal(formatTick(0.000123), '1.23e-4');
  assert.equal(formatTick(0.5), '0.5');
});
