import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LabelMask } from '../../frontend/js/canvas/mask.js';
import { brushRuns, eraserRuns, snapToBrushCentre, sweepBrush } from '../../frontend/js/canvas/brush.js';
import { floodRuns, pickLabel, polygonCoverage, polygonRuns } from '../../frontend/js/canvas/fill.js';

// Pixels an operation covers.
const runsArea = (runs) => runs.reduce((area, run) => area + run[1], 0);

// Renders a mask as rows of characters ('.' = 0) so failures show the picture.
function picture(mask) {
  const rows = [];
  for (let y = 0; y < mask.height; y++) {
    rows.push([...mask.data.subarray(y * mask.width, (y + 1) * mask.width)].map((v) => (v ? String(v) : '.')).join(''));
  }
  return rows;
}

test('LabelMask checks its size and data', () => {
  assert.throws(() => new LabelMask(0, 4), /positive integer size/);
  assert.throws(() => new LabelMask(2, 2, new Uint8Array(3)), /needs 4/);
  const mask = new LabelMask(3, 2);
  assert.equal(mask.labelAt(2, 1), 0);
  assert.equal(mask.labelAt(3, 0), null);
});

test('brush sizes: size 1 dabs one pixel, an n-square covers n x n', () => {
  const one = new LabelMask(5, 5);
  one.apply(brushRuns(5, 5, [[2.0, 2.0]], { size: 1, shape: 'round' }, 1));
  assert.deepEqual(picture(one), ['.....', '.....', '..1..', '.....', '.....']);
  const square = new LabelMask(6, 6);
  square.apply(brushRuns(6, 6, [[3.2, 2.9]], { size: 2, shape: 'square' }, 2));
  assert.equal(runsArea(brushRuns(6, 6, [[3.2, 2.9]], { size: 2, shape: 'square' }, 2)), 4);
  assert.deepEqual(picture(square).slice(2, 4), ['..22..', '..22..']);
  assert.equal(runsArea(brushRuns(20, 20, [[10.5, 10.5]], { size: 5, shape: 'square' }, 1)), 25);
});

test('a round dab is a disc: corners of its bounding square stay empty', () => {
  const mask = new LabelMask(9, 9);
  mask.apply(brushRuns(9, 9, [[4.5, 4.5]], { size: 7, shape: 'round' }, 3));
  const rows = picture(mask);
  assert.equal(rows[4], '.3333333.');
  assert.equal(rows[1][1], '.');
  assert.equal(rows[1][4], '3');
});

test('a fast stroke between two far-apart events leaves no gap', () => {
  for (const shape of ['round', 'square']) {
    const mask = new LabelMask(64, 64);
    mask.apply(brushRuns(64, 64, [[2.5, 2.5], [60.5, 50.5]], { size: 3, shape }, 1));
    // Every column the diagonal passes over is painted on the line's own row.
    for (let x = 3; x <= 60; x++) {
      const y = Math.floor(2.5 + ((x + 0.5 - 2.5) / 58) * 48);
      assert.equal(mask.labelAt(x, y), 1, `${shape} stroke has a gap at (${x}, ${y})`);
    }
  }
});

test('a horizontal square stroke is an exact rectangle', () => {
  const runs = brushRuns(20, 10, [[2.5, 4.5], [12.5, 4.5]], { size: 3, shape: 'square' }, 1);
  assert.deepEqual(runs, [[3 * 20 + 1, 13, 1], [4 * 20 + 1, 13, 1], [5 * 20 + 1, 13, 1]]);
});

test('brush strokes are clipped to the mask', () => {
  const runs = brushRuns(4, 4, [[-10, -10], [0.5, 0.5]], { size: 3, shape: 'round' }, 1);
  assert.ok(runs.every(([start, length]) => start >= 0 && start + length <= 16));
  assert.ok(runsArea(runs) > 0);
});

test('eraser paints background', () => {
  const mask = new LabelMask(4, 1, Uint8Array.from([3, 3, 3, 3]));
  mask.apply(eraserRuns(4, 1, [[1.5, 0.5]], { size: 1, shape: 'square' }));
  assert.deepEqual([...mask.data], [3, 0, 3, 3]);
});

test('sweepBrush rejects bad brushes', () => {
  assert.throws(() => sweepBrush(new Uint8Array(4), 2, 2, [[0, 0]], { size: 0, shape: 'round' }), /at least 1/);
  assert.throws(() => sweepBrush(new Uint8Array(4), 2, 2, [[0, 0]], { size: 1, shape: 'star' }), /round or square/);
});

test('snapToBrushCentre: odd sizes snap to centres, even sizes to corners', () => {
  assert.deepEqual(snapToBrushCentre(3.9, 1.1, 3), [3.5, 1.5]);
  assert.deepEqual(snapToBrushCentre(3.6, 1.4, 4), [4, 1]);
});

test('flood fill stays inside its 4-connected region', () => {
  const mask = new LabelMask(5, 5, Uint8Array.from([
    0, 0, 1, 0, 0,
    0, 0, 1, 0, 0,
    1, 1, 1, 0, 0,
    0, 0, 0, 1, 0,
    0, 0, 0, 0, 1,
  ]));
  mask.apply(floodRuns(mask, 0, 0, 4));
  assert.deepEqual(picture(mask), ['441..', '441..', '111..', '...1.', '....1']);
  // The right region wraps around the diagonal (4-connected only, so it does not leak through the corner).
  mask.apply(floodRuns(mask, 4, 0, 7));
  assert.deepEqual(picture(mask), ['44177', '44177', '11177', '...17', '....1']);
});

test('flood fill on a U shape reaches both arms', () => {
  const mask = new LabelMask(5, 4, Uint8Array.from([
    2, 0, 2, 0, 2,
    2, 0, 2, 0, 2,
    2, 0, 0, 0, 2,
    2, 2, 2, 2, 2,
  ]));
  mask.apply(floodRuns(mask, 1, 0, 5));
  assert.deepEqual(picture(mask), ['25252', '25252', '25552', '22222']);
});

test('flood fill outside the mask or onto the same label is a no-op', () => {
  const mask = new LabelMask(3, 3);
  assert.deepEqual(floodRuns(mask, 5, 5, 1), []);
  assert.deepEqual(floodRuns(mask, 1, 1, 0), []);
});

test('polygon fill covers pixels whose centre is inside', () => {
  const square = polygonCoverage(6, 6, [[1, 1], [4, 1], [4, 4], [1, 4]]);
  const mask = new LabelMask(6, 6, square);
  assert.deepEqual(picture(mask), ['......', '.111..', '.111..', '.111..', '......', '......']);
});

test('polygon fill uses the even-odd rule for a self-crossing lasso', () => {
  // A pentagram: the central pentagon is crossed twice → outside under even-odd.
  const star = [];
  for (let k = 0; k < 5; k++) {
    const angle = -Math.PI / 2 + (k * 4 * Math.PI) / 5;
    star.push([20 + 18 * Math.cos(angle), 20 + 18 * Math.sin(angle)]);
  }
  const mask = new LabelMask(40, 40, polygonCoverage(40, 40, star));
  assert.equal(mask.labelAt(20, 20), 0, 'centre of a pentagram is outside by even-odd');
  assert.equal(mask.labelAt(20, 5), 1, 'the top point is inside');
});

test('polygon fill clips to the mask and ignores degenerate polygons', () => {
  assert.equal(runsArea(polygonRuns(4, 4, [[-5, -5], [10, -5], [10, 10], [-5, 10]], 1)), 16);
  assert.deepEqual(polygonRuns(4, 4, [[0, 0], [3, 3]], 1), []);
});

test('eyedropper reads the class under a continuous position', () => {
  const mask = new LabelMask(2, 2, Uint8Array.from([0, 1, 2, 3]));
  assert.equal(pickLabel(mask, 1.7, 1.2), 3);
  assert.equal(pickLabel(mask, -0.1, 0), null);
});

import { centredSquare, moveSquare, squareFromDrag } from '../../frontend/js/canvas/crop.js';

test('crop box: centred square, drag in any direction, clipped and moved inside the image', () => {
  assert.deepEqual(centredSquare(400, 300), [50, 0, 300]);
  assert.deepEqual(squareFromDrag([10, 10], [60, 30], 400, 300), [10, 10, 50]);
  assert.deepEqual(squareFromDrag([100, 100], [40, 90], 400, 300), [40, 40, 60]);
  assert.deepEqual(squareFromDrag([350, 10], [600, 600], 400, 300), [350, 10, 50]);
  assert.deepEqual(moveSquare([50, 0, 300], 500, -20, 400, 300), [100, 0, 300]);
});
