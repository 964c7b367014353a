// Brush and eraser rasterisation. A stroke is the polyline through the pointer positions (mask coordinates,
// continuous); every segment is filled as the swept brush shape, so a fast drag with far-apart events has no gaps.
// A pixel is covered when its centre (x + 0.5, y + 0.5) lies inside the swept shape.

import { coverageToRuns } from './runs.js';

export const BACKGROUND = 0;

/**
 * Snaps a pointer position to where a brush of `size` pixels is centred: on a pixel centre for odd sizes, on a pixel
 * corner for even sizes, so a size-n square covers exactly n x n pixels and a size-1 brush exactly one.
 */
export function snapToBrushCentre(x, y, size) {
  if (size % 2 === 1) return [Math.floor(x) + 0.5, Math.floor(y) + 0.5];
  return [Math.round(x), Math.round(y)];
}

// Is the point p inside the segment a→b swept by a disc of radius r? (distance from p to the segment ≤ r)
function inSweptDisc(px, py, ax, ay, dx, dy, lengthSq, rSq) {
  let t = lengthSq > 0 ? ((px - ax) * dx + (py - ay) * dy) / lengthSq : 0;
  t = t < 0 ? 0 : t > 1 ? 1 : t;
  const ex = px - (ax + t * dx);
  const ey = py - (ay + t * dy);
  return ex * ex + ey * ey <= rSq;
}

// Is p inside the segment a→b swept by the axis-aligned square [-r, r]²? True when the intervals of t ∈ [0, 1] where
// |p - a - t·d| ≤ r on each axis intersect.
function inSweptSquare(px, py, ax, ay, dx, dy, r) {
  let lo = 0;
  let hi = 1;
  for (const [p, a, d] of [[px, ax, dx], [py, ay, dy]]) {
    if (d === 0) {
      if (Math.abs(p - a) > r) return false;
    } else {
      const t0 = (p - a - r) / d;
      const t1 = (p - a + r) / d;
      lo = Math.max(lo, Math.min(t0, t1));
      hi = Math.min(hi, Math.max(t0, t1));
    }
  }
  return lo <= hi;
}

/**
 * Marks in `coverage` the pixels swept by a brush along `points`.
 * @param {Uint8Array} coverage  width*height bytes, set to 1 where covered (others untouched)
 * @param {number} width
 * @param {number} height
 * @param {Array<[number, number]>} points  pointer positions in mask coordinates; one point = a dab
 * @param {{size: number, shape: 'round' | 'square'}} brush  size = diameter / side in pixels
 */
export function sweepBrush(coverage, width, height, points, { size, shape }) {
  if (!(size >= 1)) throw new RangeError(`brush size must be at least 1 pixel, got ${size}`);
  if (shape !== 'round' && shape !== 'square') throw new RangeError(`brush shape must be round or square, got ${shape}`);
  if (points.length === 0) return;
  const r = size / 2;
  // A hair over r² so pixel centres exactly on the rim count on every platform.
  const rSq = r * r + 1e-9;
  const centres = points.map(([x, y]) => snapToBrushCentre(x, y, size));
  const segments = centres.length === 1 ? [[centres[0], centres[0]]] : centres.slice(1).map((b, k) => [centres[k], b]);
  for (const [[ax, ay], [bx, by]] of segments) {
    const dx = bx - ax;
    const dy = by - ay;
    const lengthSq = dx * dx + dy * dy;
    const x0 = Math.max(0, Math.floor(Math.min(ax, bx) - r));
    const x1 = Math.min(width - 1, Math.ceil(Math.max(ax, bx) + r));
    const y0 = Math.max(0, Math.floor(Math.min(ay, by) - r));
    const y1 = Math.min(height - 1, Math.ceil(Math.max(ay, by) + r));
    for (let y = y0; y <= y1; y++) {
      const py = y + 0.5;
      const row = y * width;
      for (let x = x0; x <= x1; x++) {
        if (coverage[row + x]) continue;
        const px = x + 0.5;
        const inside = shape === 'round'
          ? inSweptDisc(px, py, ax, ay, dx, dy, lengthSq, rSq)
          : inSweptSquare(px, py, ax, ay, dx, dy, r);
        if (inside) coverage[row + x] = 1;
      }
    }
  }
}

/** Runs painting `label` under a brush stroke. */
export function brushRuns(width, height, points, brush, label) {
  const coverage = new Uint8Array(width * height);
  sweepBrush(coverage, width, height, points, brush);
  return coverageToRuns(coverage, label);
}

/** Runs erasing (painting background class 0) under a brush stroke. */
export function eraserRuns(width, height, points, brush) {
  return brushRuns(width, height, points, brush, BACKGROUND);
}
