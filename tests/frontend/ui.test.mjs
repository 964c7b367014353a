import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApiError, errorMessage } from '../../frontend/js/errors.js';
import { eventMatches, parseShortcut } from '../../frontend/js/ui/shortcut-keys.js';

test('errorMessage reads ninja details, validation lists and plain text, never HTML', () => {
  assert.equal(errorMessage(400, { detail: 'image is not a PNG or JPEG' }),
    'The server could not use that input: image is not a PNG or JPEG');
  assert.equal(errorMessage(422, { detail: [{ loc: ['body', 'payload', 'steps'], msg: 'must be > 0' }] }),
    'Some fields are not valid: steps: must be > 0');
  assert.equal(errorMessage(500, '<html><body>Server Error</body></html>'), 'The server hit an error.');
  assert.equal(errorMessage(0, null), 'The server did not answer.');
  assert.equal(errorMessage(418, 'short and stout'), 'Request failed (HTTP 418): short and stout');
  const error = new ApiError(403, { detail: 'your role may not do this' });
  assert.equal(error.status, 403);
  assert.match(error.message, /not allowed.*your role/);
});

test('shortcuts: modifiers must match exactly; shifted symbols match by key', () => {
  const undo = parseShortcut('ctrl+z');
  const redo = parseShortcut('ctrl+shift+z');
  assert.ok(eventMatches(undo, { key: 'z', ctrlKey: true }));
  assert.ok(!eventMatches(undo, { key: 'Z', ctrlKey: true, shiftKey: true }));
  assert.ok(eventMatches(redo, { key: 'Z', ctrlKey: true, shiftKey: true }));
  assert.ok(eventMatches(redo, { key: 'z', metaKey: true, shiftKey: true }));
  assert.ok(eventMatches(parseShortcut('?'), { key: '?', shiftKey: true }));
  assert.ok(eventMatches(parseShortcut('space'), { key: ' ' }));
  assert.ok(!eventMatches(parseShortcut('b'), { key: 'b', altKey: true }));
  assert.throws(() => parseShortcut('hyper+x'), /unknown modifier/);
});

import { reconnectDelay } from '../../frontend/js/backoff.js';

test('reconnect delays grow exponentially to a 10 s cap, with jitter', () => {
  assert.equal(reconnectDelay(0, () => 0.5), 500);
  assert.equal(reconnectDelay(3, () => 0.5), 4000);
  assert.equal(reconnectDelay(20, () => 0.5), 10000);
  assert.equal(reconnectDelay(0, () => 0), 375);
  assert.equal(reconnectDelay(0, () => 1), 625);
});

import { DigitPicker } from '../../frontend/js/ui/digit-picker.js';

test('digit picker: single digits, two-digit classes within the window, restarts outside it', () => {
  const picker = new DigitPicker(34);
  assert.equal(picker.push('3', 0), 3);
  assert.equal(picker.push('2', 100), 32);
  assert.equal(picker.push('5', 5000), 5);
  assert.equal(picker.push('0', 9000), 10);
  assert.equal(picker.push('9', 9100), 9, '109 is no class: restart from 9');
  const small = new DigitPicker(5);
  assert.equal(small.push('7', 0), null);
  assert.equal(small.push('1', 100), 1);
});

import { parseRoute, routeHash } from '../../frontend/js/router.js';

test('routes parse to a view and an optional id', () => {
  assert.deepEqual(parseRoute('#/annotate/12'), { view: 'annotate', id: 12 });
  assert.deepEqual(parseRoute('#/library'), { view: 'library', id: null });
  assert.deepEqual(parseRoute('#/account'), { view: 'account', id: null });
  assert.deepEqual(parseRoute(''), { view: 'annotate', id: null });
  assert.deepEqual(parseRoute('#/nope/x'), { view: 'annotate', id: null });
  assert.equal(routeHash('edit', 4), '#/edit/4');
  assert.equal(routeHash('admin'), '#/admin');
});

import { matchesFilters } from '../../frontend/js/library-filter.js';

test('library filters: text in name or description, tag, edited class, author', () => {
  const vector = { name: 'Big smile', description: 'wider mouth', tags: ['mouth', 'happy'], edited_classes: [5, 6],
    author: 'ann' };
  const none = { text: '', tag: '', classIndex: '', author: '' };
  assert.ok(matchesFilters(vector, none));
  assert.ok(matchesFilters(vector, { ...none, text: 'WIDER' }));
  assert.ok(!matchesFilters(vector, { ...none, text: 'eyes' }));
  assert.ok(matchesFilters(vector, { ...none, tag: 'happy', classIndex: '6', author: 'ann' }));
  assert.ok(!matchesFilters(vector, { ...none, classIndex: '2' }));
  assert.ok(!matchesFilters(vector, { ...none, author: 'bob' }));
});

import { classIouRows, scalarMetrics } from '../../frontend/js/metrics.js';

test('metrics: per-class IoU rows from the studio list, a class-indexed list or a dict; scalars summarised', () => {
  const classes = [{ name: 'bg', colour: '#000000' }, { name: 'skin', colour: '#ffcc99' }, { name: 'eye', colour: '#0000ff' }];
  assert.deepEqual(classIouRows({ per_class_iou: [
    { class: 0, name: 'bg', colour: '#000000', iou: 0.9, pixels: 1200 },
    { class: 2, name: 'eye', colour: '#0000ff', iou: null, pixels: 0 }] }), [
    { index: 0, name: 'bg', colour: '#000000', iou: 0.9, pixels: 1200 },
    { index: 2, name: 'eye', colour: '#0000ff', iou: null, pixels: 0 }]);
  assert.deepEqual(classIouRows({ class_iou: [0.9, 0.25] }, classes).map((r) => [r.name, r.colour, r.iou]),
    [['bg', '#000000', 0.9], ['skin', '#ffcc99', 0.25]]);
  assert.deepEqual(classIouRows({ per_class_iou: { eye: 0.5, mouth: null } }, classes).map((r) => [r.index, r.name, r.iou]),
    [[2, 'eye', 0.5], [-1, 'mouth', null]]);
  assert.equal(classIouRows({ mean_iou: 0.4 }), null);
  assert.deepEqual(scalarMetrics({ mean_iou: 0.123456, steps: 200, member_pixel_acc: [0.9] }),
    ['mean iou 0.1235', 'steps 200']);
});

import { encoderQualityRows } from '../../frontend/js/metrics.js';

test('metrics: encoder quality next to the active encoder, better or worse per measure', () => {
  const rows = encoderQualityRows({ eval_psnr: 18.5, baseline_psnr: 16, eval_latent_mse: 0.4, baseline_latent_mse: 0.3,
    eval_samples: 8 });
  assert.deepEqual(rows, [
    { label: 'PSNR (dB)', value: 18.5, baseline: 16, better: true },
    { label: 'W+ error', value: 0.4, baseline: 0.3, better: false }]);
  assert.deepEqual(encoderQualityRows({ eval_lpips: 0.2 }), [{ label: 'LPIPS', value: 0.2, baseline: null, better: null }]);
  assert.deepEqual(encoderQualityRows({}), []);
});

import { measuredOn, trainingSummary } from '../../frontend/js/panels/iou-table.js';

test('iou table: says which samples measured the IoU', () => {
  assert.equal(measuredOn({ evaluated_on: 'held-out', num_heldout: 3, num_samples: 13 }),
    'on the 3 submitted/reviewed samples left out of training');
  assert.equal(measuredOn({ evaluated_on: 'held-out split', num_heldout: 1, num_samples: 2 }),
    'on 1 picked sample held out of training');
  assert.equal(measuredOn({ evaluated_on: 'training', num_heldout: 0, num_samples: 2 }),
    'on the 2 training samples (nothing was held out)');
  assert.equal(measuredOn({ mean_iou: 0.3 }), '');
});

test('iou table: the training summary says whether the features were kept, and leaves the IoU to its line', () => {
  assert.deepEqual(trainingSummary({ num_samples: 16, steps: 400, stopped_early: true, cached_features: false,
    mean_iou: 0.5, per_class_iou: [] }),
  ['num samples 16', 'steps 400', 'stopped early true', 'cached features false']);
  assert.deepEqual(trainingSummary(null), []);
});

test('the class-number help follows the schema: 18 classes pick 1–9, 0 and 11–17', async () => {
  const { digitHelp, DigitPicker } = await import('../../frontend/js/ui/digit-picker.js');
  assert.equal(digitHelp(18), '1–9 / 0: pick class by number (two digits quickly: 11–17)');
  assert.equal(digitHelp(35), '1–9 / 0: pick class by number (two digits quickly: 11–34)');
  assert.equal(digitHelp(3), '1–2: pick class by number');
  assert.equal(digitHelp(12), '1–9 / 0: pick class by number (two digits quickly: 11)');
  assert.equal(digitHelp(2), '1: pick class by number');
  // What the help says is what the picker does.
  const picker = new DigitPicker(18);
  assert.equal(picker.push('1', 0), 1);
  assert.equal(picker.push('7', 100), 17);
  assert.equal(picker.push('1', 2000), 1);
  assert.equal(picker.push('8', 2100), 8); // 18 is no class: the newest digit
});

test('a binding described by a function is described by the help panel as it is now', async () => {
  const { bindKey, listBindings } = await import('../../frontend/js/ui/keyboard.js');
  let classes = 18;
  const unbind = bindKey('7', () => `pick among ${classes}`, () => {}, 'test-scope');
  assert.deepEqual(listBindings().get('test-scope'), [{ keys: '7', description: 'pick among 18' }]);
  classes = 34;
  assert.deepEqual(listBindings().get('test-scope'), [{ keys: '7', description: 'pick among 34' }]);
  unbind();
});

test('a queued job says how many jobs are ahead of it, not "running 0 %"', async () => {
  const { describeJob } = await import('../../frontend/js/jobs.js');
  assert.equal(describeJob({ status: 'queued', jobs_ahead: 2, progress: 0 }), 'queued behind 2 jobs');
  assert.equal(describeJob({ status: 'queued', jobs_ahead: 1, progress: 0 }), 'queued behind 1 job');
  assert.equal(describeJob({ status: 'queued', jobs_ahead: 0, progress: 0 }), 'queued: next for a worker');
  assert.equal(describeJob({ status: 'running', stage: 'prelabel', progress: 0.5 }), 'prelabel 50%');
  assert.equal(describeJob({ status: 'failed', error: 'boom' }), 'failed: boom');
});

test('a finished edit is read from its edit.result message; only a missed message makes a request', async () => {
  const { finishedEdit } = await import('../../frontend/js/jobs.js');
  const asked = [];
  const realFetch = globalThis.fetch;
  globalThis.location = { origin: 'http://studio.test' };
  globalThis.fetch = async (url) => {
    asked.push(String(url));
    const edit = { id: 7, result: { image_url: '/media/e.png' } };
    return { ok: true, status: 200, text: async () => JSON.stringify(edit) };
  };
  try {
    const session = { id: 7, mode: 1, job_id: 70 };
    const message = { type: 'edit.result', session: 7, image_url: '/media/a.png', mask_url: '/media/m.png',
      has_vector: true, edited_classes: [2], metrics: { psnr: 30 } };
    assert.deepEqual(finishedEdit(session, message), { id: 7, mode: 1, job_id: 70, job_status: 'succeeded',
      result: { image_url: '/media/a.png', mask_url: '/media/m.png', has_vector: true, edited_classes: [2],
        metrics: { psnr: 30 } } });
    assert.deepEqual(asked, []);
    assert.equal((await finishedEdit(session, null)).result.image_url, '/media/e.png');
    assert.deepEqual(asked, ['http://studio.test/api/edits/7']);
  } finally {
    globalThis.fetch = realFetch;
    delete globalThis.location;
  }
});
