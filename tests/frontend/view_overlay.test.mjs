import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MAX_SCALE, fitView, maskToScreen, panBy, screenToMask, wheelZoomFactor, zoomAt,
} from '../../frontend/js/canvas/view.js';
import {
  compositeOverlay, compositeUncertainty, heatColour, overlayLookup, parseHexColour,
} from '../../frontend/js/canvas/overlay.js';

test('fitView centres the image and screen/mask round-trip', () => {
  const view = fitView(256, 128, 800, 600, 0);
  assert.equal(view.scale, 800 / 256);
  assert.deepEqual(maskToScreen(view, 0, 0), [0, (600 - 128 * view.scale) / 2]);
  const [mx, my] = screenToMask(view, 123, 456);
  assert.deepEqual(maskToScreen(view, mx, my).map((v) => Math.round(v * 1e9) / 1e9), [123, 456]);
});

test('zoomAt keeps the point under the cursor fixed and clamps the scale', () => {
  const view = { scale: 2, offsetX: 10, offsetY: -5 };
  const before = screenToMask(view, 300, 200);
  const zoomed = zoomAt(view, 1.5, 300, 200);
  assert.equal(zoomed.scale, 3);
  const after = screenToMask(zoomed, 300, 200);
  assert.ok(Math.abs(after[0] - before[0]) < 1e-9 && Math.abs(after[1] - before[1]) < 1e-9);
  assert.equal(zoomAt(view, 1e6, 0, 0).scale, MAX_SCALE);
});

test('wheel up zooms in, wheel down zooms out, panBy moves the offset', () => {
  assert.ok(wheelZoomFactor(-100) > 1);
  assert.ok(wheelZoomFactor(100) < 1);
  assert.deepEqual(panBy({ scale: 1, offsetX: 1, offsetY: 2 }, 5, -3), { scale: 1, offsetX: 6, offsetY: -1 });
});

test('parseHexColour accepts #rrggbb and #rgb, rejects the rest', () => {
  assert.deepEqual(parseHexColour('#ff8000'), [255, 128, 0]);
  assert.deepEqual(parseHexColour('#0f0'), [0, 255, 0]);
  assert.throws(() => parseHexColour('red'), /#rrggbb/);
});

test('overlay: class colours at opacity, background and hidden classes transparent', () => {
  const lookup = overlayLookup(['#000000', '#ff0000', '#00ff00'], new Set([2]), 0.5);
  const mask = Uint8Array.from([0, 1, 2, 1]);
  const rgba = new Uint8ClampedArray(16);
  compositeOverlay(rgba, mask, 2, lookup);
  assert.deepEqual([...rgba], [0, 0, 0, 0, 255, 0, 0, 128, 0, 0, 0, 0, 255, 0, 0, 128]);
});

test('overlay repaints only the requested rows', () => {
  const lookup = overlayLookup(['#000000', '#0000ff'], new Set(), 1);
  const rgba = new Uint8ClampedArray(2 * 2 * 4);
  compositeOverlay(rgba, Uint8Array.from([1, 1, 1, 1]), 2, lookup, 1, 1);
  assert.deepEqual([...rgba.subarray(0, 8)], [0, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual([...rgba.subarray(8, 12)], [0, 0, 255, 255]);
});

test('uncertainty heat-map: sure pixels transparent, the most uncertain opaque red', () => {
  assert.deepEqual(heatColour(0), [255, 255, 0, 0]);
  assert.deepEqual(heatColour(1), [255, 0, 0, 220]);
  const rgba = new Uint8ClampedArray(8);
  compositeUncertainty(rgba, Float32Array.from([0, 0.4]));
  assert.deepEqual([...rgba], [255, 255, 0, 0, 255, 0, 0, 220]);
});

test('overlay shows a stroke in progress over the mask', () => {
  const lookup = overlayLookup(['#000000', '#ff0000', '#00ff00'], new Set(), 1);
  const rgba = new Uint8ClampedArray(12);
  compositeOverlay(rgba, Uint8Array.from([1, 1, 0]), 3, lookup, 0, 0,
    { coverage: Uint8Array.from([0, 1, 1]), label: 2 });
  assert.deepEqual([...rgba], [255, 0, 0, 255, 0, 255, 0, 255, 0, 255, 0, 255]);
});

test('maskDiff finds the pixels where a revision differs from the current mask; compositeDiff paints only them', async () => {
  const { maskDiff, compositeDiff } = await import('../../frontend/js/canvas/diff.js');
  const revision = Uint8Array.from([0, 1, 1, 2, 0, 3]);
  const current = Uint8Array.from([0, 1, 2, 2, 4, 3]);
  const { changed, count } = maskDiff(revision, current);
  assert.deepEqual([...changed], [0, 0, 1, 0, 1, 0]);
  assert.equal(count, 2);
  const rgba = compositeDiff(new Uint8ClampedArray(6 * 4).fill(7), changed, [255, 0, 255, 200]);
  assert.deepEqual([...rgba.slice(8, 12)], [255, 0, 255, 200]);
  assert.deepEqual([...rgba.slice(0, 4)], [0, 0, 0, 0]);
  assert.throws(() => maskDiff(revision, new Uint8Array(3)), /cannot be compared/);
});
