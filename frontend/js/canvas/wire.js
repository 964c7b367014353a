// Operations on the wire. The server's live rooms (webapp/datasets/masks.py) apply, in server order:
//   {"op": "runs",    "runs": [[start, length, class], …]}               pixels already rasterised (runs.js format)
//   {"op": "stroke",  "class": k, "radius": r, "points": [[x, y], …]}   round brush along a polyline (Pillow)
//   {"op": "polygon", "class": k, "points": [[x, y], …]}                filled polygon, outline included (Pillow)
// The studio sends every change as runs, so the server writes exactly the pixels this client drew, whatever the
// tool (brush, fill, polygon, lasso, undo, redo). An op holds at most MAX_RUNS_PER_OP runs (the server's limit);
// a bigger change goes as several ops, the parts of one client op. Stroke and polygon ops come from other clients
// (scripts); Pillow puts pixel centres on integer coordinates, our rasterisers at +0.5, so they are drawn here as
// near to Pillow as our rasterisers go (exact for one-row polygons) and the next snapshot replaces the
// approximation with the server's exact mask.

import { brushRuns } from './brush.js';
import { polygonRuns } from './fill.js';

/** The most runs the server takes in one op (webapp/datasets/masks.py MAX_RUNS_PER_OP). */
export const MAX_RUNS_PER_OP = 4096;

/**
 * Server ops for one operation's runs (sorted, not overlapping): `runs` ops of at most `maxRuns` runs each, in
 * order. No runs → no ops.
 */
export function runsToServerOps(runs, maxRuns = MAX_RUNS_PER_OP) {
  const ops = [];
  for (let i = 0; i < runs.length; i += maxRuns) {
    ops.push({ op: 'runs', runs: runs.slice(i, i + maxRuns).map(([start, length, label]) => [start, length, label]) });
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

/** Runs for one server op (exact for runs and row polygons, close to Pillow otherwise). */
export function serverOpToRuns(op, width, height) {
  if (op.op === 'runs') {
    // The server checked them (in the mask, sorted, disjoint); clip anyway so a bad op cannot write past the end.
    const size = width * height;
    return op.runs.filter(([start]) => start < size)
      .map(([start, length, label]) => [start, Math.min(length, size - start), label]);
  }
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
