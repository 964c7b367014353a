// The crop box of an uploaded photo: a square (the generator is square) dragged out by the user, kept inside the
// image. Pure maths; the crop dialog draws it.

/** The largest centred square of a width x height image: [x, y, side]. */
export function centredSquare(width, height) {
  const side = Math.min(width, height);
  return [Math.floor((width - side) / 2), Math.floor((height - side) / 2), side];
}

/**
 * The square dragged from `start` to `end` (image pixels), anchored at `start`, growing towards `end`, clipped so
 * it stays inside the image. Returns [x, y, side] with side ≥ 1.
 */
export function squareFromDrag([sx, sy], [ex, ey], width, height) {
  const dirX = ex >= sx ? 1 : -1;
  const dirY = ey >= sy ? 1 : -1;
  const room = Math.min(dirX > 0 ? width - sx : sx, dirY > 0 ? height - sy : sy);
  const side = Math.max(1, Math.min(Math.max(Math.abs(ex - sx), Math.abs(ey - sy)), room));
  return [Math.round(dirX > 0 ? sx : sx - side), Math.round(dirY > 0 ? sy : sy - side), Math.round(side)];
}

/** Moves a square by (dx, dy), keeping it inside the image. */
export function moveSquare([x, y, side], dx, dy, width, height) {
  return [Math.min(width - side, Math.max(0, Math.round(x + dx))), Math.min(height - side, Math.max(0, Math.round(y + dy))), side];
}
