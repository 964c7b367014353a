// Operations on the wire. The server's live rooms speak its own op vocabulary (webapp/datasets/masks.py), applied
// with Pillow's ImageDraw in server order:
//   {"op": "stroke",  "class": k, "radius": r, "points": [[x, y], …]}   round brush along a polyline
//   {"op": "polygon", "class": k, "points": [[x, y], …]}                filled polygon (outline included)
// Pillow puts pixel centres on integer coordinates; our tools put them at +0.5. So that every client and the
// server end with the same pixels, the studio sends its own already-rasterised runs: each run (split at row ends)
// becomes a degenerate polygon [[x0, y], [x1, y], [x0, y]], which Pillow fills as exactly the pixels x0..x1 of row y.
// Ops from other clients (scripts) in the server's own form are rasterised here as near to Pillow as our
// rasterisers go; the next snapshot replaces the approximation with the server's exact mask.

import { brushRuns } from './brush.js';
import { polygonRuns } from './fill.js';

/** Server ops for runs: one degenerate polygon per row segment. */
export function runsToServerOps(runs, width) {
  const ops = [];
  for (const [start, length, label] of runs) {
    let index = start;
    const end = start + length;
    while (index < end) {
      const y = Math.floor(index / width);
      const x0 = index - y * width;
      const x1 = Math.min(width - 1, x0 + (end - index) - 1);
      ops.push({ op: 'polygon', class: label, points: [[x0, y], [x1, y], [x0, y]] });
      index += x1 - x0 + 1;
    }
  }
  return ops;
}

// A polygon whose points all lie on one integer row: a run written by runsToServerOps (or any Pillow row fill).
function rowRun(points, width, height) {
  const y = points[0][1];
  if (!Number.isInteger(y) || y < 0 || y >= height || !points.every((p) => p[1] === y)) return null;
  const xs = points.map((p) => p[0]);
  const x0 = Math.max(0, Math.ceil(Math.min(...xs)));
  const x1 = Math.min(width - 1, Math.floor(Math.max(...xs)));
  return x1 >= x0 ? [y * width + x0, x1 - x0 + 1] : null;
}

/** Runs for one server op (exact for row polygons, close to Pillow otherwise). */
export function serverOpToRuns(op, width, height) {
  const label = op.class;
  if (op.op === 'polygon') {
    const run = rowRun(op.points, width, height);
    if (run) return [[run[0], run[1], label]];
    return polygonRuns(width, height, op.points.map(([x, y]) => [x + 0.5, y + 0.5]), label);
  }
  if (op.op === 'stroke') {
    const size = Math.max(1, Math.round(2 * op.radius));
    return brushRuns(width, height, op.points.map(([x, y]) => [x + 0.5, y + 0.5]), { size, shape: 'round' }, label);
  }
  throw new RangeError(`unknown server operation ${JSON.stringify(op.op)}`);
}

/** Runs for a list of server ops applied in order (later ops win), merged into one operation. */
export function serverOpsToRuns(ops, width, height) {
  const labels = new Int16Array(width * height).fill(-1);
  for (const op of ops) {
    for (const [start, length, label] of serverOpToRuns(op, width, height)) labels.fill(label, start, start + length);
  }
  const runs = [];
  let i = 0;
  while (i < labels.length) {
    const label = labels[i];
    const start = i;
    while (i < labels.length && labels[i] === label) i++;
    if (label >= 0) runs.push([start, i - start, label]);
  }
  return runs;
}
