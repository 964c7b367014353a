// Where two masks of one sample differ (a revision against the mask on the canvas), and that difference as an RGBA
// layer for the canvas: changed pixels in one bright colour, the rest transparent. Pure, unit-tested.

/**
 * @param {Uint8Array} a  class indices, width*height
 * @param {Uint8Array} b  same size
 * @returns {{changed: Uint8Array, count: number}} changed[i] = 1 where a and b differ
 */
export function maskDiff(a, b) {
  if (a.length !== b.length) throw new RangeError(`masks of ${a.length} and ${b.length} pixels cannot be compared`);
  const changed = new Uint8Array(a.length);
  let count = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) { changed[i] = 1; count++; }
  }
  return { changed, count };
}

/** Writes `changed` into `rgba` (width*height*4): `colour` [r, g, b, a] where 1, transparent where 0. */
export function compositeDiff(rgba, changed, colour = [255, 0, 255, 230]) {
  for (let i = 0; i < changed.length; i++) {
    rgba.set(changed[i] ? colour : [0, 0, 0, 0], i * 4);
  }
  return rgba;
}
