// Pixel runs: the one currency of every mask change.
//
// An OPERATION is a list of runs `[start, length, label]` over the flat index `y * width + x` of a label mask.
// Runs are sorted by start and never overlap. A tool rasterises into a coverage bitmap and turns it into runs;
// applying the runs to a mask returns the inverse runs (the labels that were there before), so undo, redo,
// remote ops and replay in server order are all the same `applyRuns` call.

/**
 * Runs covering every set byte of a coverage bitmap, all with one label.
 * @param {Uint8Array} coverage  width*height bytes, non-zero = covered
 * @param {number} label
 * @returns {Array<[number, number, number]>}
 */
export function coverageToRuns(coverage, label) {
  const runs = [];
  const n = coverage.length;
  let i = 0;
  while (i < n) {
    if (!coverage[i]) { i++; continue; }
    const start = i;
    while (i < n && coverage[i]) i++;
    runs.push([start, i - start, label]);
  }
  return runs;
}

/**
 * Writes runs into `data` in place and returns the inverse runs (previous labels, split where they change).
 * @param {Uint8Array} data  the flat mask
 * @param {Array<[number, number, number]>} runs
 * @returns {Array<[number, number, number]>} inverse
 */
export function applyRuns(data, runs) {
  const inverse = [];
  for (const [start, length, label] of runs) {
    const end = start + length;
    let i = start;
    while (i < end) {
      const previous = data[i];
      const from = i;
      while (i < end && data[i] === previous) i++;
      inverse.push([from, i - from, previous]);
    }
    data.fill(label, start, end);
  }
  return inverse;
}

/**
 * First and last row (inclusive) the runs touch, or null for no runs; renderers repaint only these rows.
 * @returns {{y0: number, y1: number} | null}
 */
export function runsRowSpan(runs, width) {
  if (runs.length === 0) return null;
  const first = runs[0];
  const last = runs[runs.length - 1];
  return { y0: Math.floor(first[0] / width), y1: Math.floor((last[0] + last[1] - 1) / width) };
}

/**
 * Runs that write `target` labels only where the mask still holds the `expected` labels; pixels changed by
 * someone else since are left alone. `target` and `expected` must cover the same pixels in the same order (an op
 * and its inverse do). This is per-user undo (target = inverse, expected = op) and redo (the other way round) on a
 * shared mask.
 * @param {Uint8Array} data
 * @param {Array<[number, number, number]>} target
 * @param {Array<[number, number, number]>} expected
 */
export function guardedRuns(data, target, expected) {
  const out = [];
  let e = 0;
  let open = null; // the run being extended
  for (const [start, length, label] of target) {
    for (let i = start; i < start + length; i++) {
      while (e < expected.length && expected[e][0] + expected[e][1] <= i) e++;
      const run = expected[e];
      if (!run || run[0] > i) throw new RangeError(`guardedRuns: pixel ${i} of the target is not in the expected runs`);
      if (data[i] === run[2] && data[i] !== label) {
        if (open && open[0] + open[1] === i && open[2] === label) open[1]++;
        else { open = [i, 1, label]; out.push(open); }
      }
    }
  }
  return out;
}

/**
 * One operation from several with disjoint pixels (the chunks of one stroke sent while it was drawn), sorted by
 * start so it is a valid operation again.
 */
export function mergeDisjointRuns(...lists) {
  return lists.flat().sort((a, b) => a[0] - b[0]);
}
