// Flood fill, polygon/lasso fill and the eyedropper, on a LabelMask.

import { coverageToRuns } from './runs.js';

/**
 * Coverage of the 4-connected region of equal labels containing (x, y). Scanline fill: each stack entry is a seed,
 * the whole horizontal span through it is taken at once, then the rows above and below are scanned for new seeds.
 * @param {import('./mask.js').LabelMask} mask
 * @returns {Uint8Array | null} null when (x, y) is outside the mask
 */
export function floodCoverage(mask, x, y) {
  if (!mask.contains(x, y)) return null;
  const { width, height, data } = mask;
  const target = data[y * width + x];
  const coverage = new Uint8Array(width * height);
  const stack = [y * width + x];
  while (stack.length) {
    const seed = stack.pop();
    if (coverage[seed]) continue;
    const row = seed - (seed % width);
    let left = seed;
    while (left > row && data[left - 1] === target && !coverage[left - 1]) left--;
    let right = seed;
    while (right < row + width - 1 && data[right + 1] === target && !coverage[right + 1]) right++;
    coverage.fill(1, left, right + 1);
    for (const neighbourRow of [row - width, row + width]) {
      if (neighbourRow < 0 || neighbourRow >= width * height) continue;
      let inSpan = false;
      for (let i = left - row + neighbourRow, end = right - row + neighbourRow; i <= end; i++) {
        const open = data[i] === target && !coverage[i];
        if (open && !inSpan) stack.push(i);
        inSpan = open;
      }
    }
  }
  return coverage;
}

/** Runs filling the 4-connected region at (x, y) with `label`; [] outside the mask or when it already has it. */
export function floodRuns(mask, x, y, label) {
  if (mask.labelAt(x, y) === label) return [];
  const coverage = floodCoverage(mask, x, y);
  return coverage ? coverageToRuns(coverage, label) : [];
}

/**
 * Coverage of a closed polygon (a lasso is a polygon with many vertices) by the EVEN-ODD rule: a pixel is inside when
 * a ray from its centre crosses the outline an odd number of times, so the loops of a self-crossing lasso alternate
 * in/out as they do in SVG's fill-rule="evenodd". Scanline fill: for each row, the x-crossings of the horizontal
 * through the pixel centres with every edge are sorted and the spans between pairs are filled. Edges count on a
 * half-open y-interval so a vertex on the scanline is crossed once, not twice.
 * @param {number} width
 * @param {number} height
 * @param {Array<[number, number]>} vertices  mask coordinates, the closing edge is implied
 */
export function polygonCoverage(width, height, vertices) {
  const coverage = new Uint8Array(width * height);
  if (vertices.length < 3) return coverage;
  const ys = vertices.map((v) => v[1]);
  const yStart = Math.max(0, Math.floor(Math.min(...ys)));
  const yEnd = Math.min(height - 1, Math.ceil(Math.max(...ys)));
  const crossings = [];
  for (let y = yStart; y <= yEnd; y++) {
    const yc = y + 0.5;
    crossings.length = 0;
    for (let k = 0; k < vertices.length; k++) {
      const [x0, y0] = vertices[k];
      const [x1, y1] = vertices[(k + 1) % vertices.length];
      if ((y0 <= yc) !== (y1 <= yc)) crossings.push(x0 + ((yc - y0) / (y1 - y0)) * (x1 - x0));
    }
    crossings.sort((a, b) => a - b);
    for (let k = 0; k + 1 < crossings.length; k += 2) {
      // Pixels whose centre x + 0.5 lies in [crossing_k, crossing_k+1).
      const from = Math.max(0, Math.ceil(crossings[k] - 0.5));
      const to = Math.min(width, Math.ceil(crossings[k + 1] - 0.5));
      if (to > from) coverage.fill(1, y * width + from, y * width + to);
    }
  }
  return coverage;
}

/** Runs filling a polygon/lasso with `label` (even-odd rule, see polygonCoverage). */
export function polygonRuns(width, height, vertices, label) {
  return coverageToRuns(polygonCoverage(width, height, vertices), label);
}

/** Eyedropper: the class under mask coordinates (x, y), or null outside. */
export function pickLabel(mask, x, y) {
  return mask.labelAt(Math.floor(x), Math.floor(y));
}
