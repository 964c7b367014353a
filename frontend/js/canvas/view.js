// The view transform between mask pixels and screen (canvas CSS) pixels: screen = mask * scale + offset.
// Pure maths so zoom-around-the-cursor and pan are unit-tested; the canvas panel only feeds it events.

export const MIN_SCALE = 0.1;
export const MAX_SCALE = 64;

/** @typedef {{scale: number, offsetX: number, offsetY: number}} View */

/** The view that fits a width x height image centred in a viewport, with a margin of `padding` screen pixels. */
export function fitView(width, height, viewportWidth, viewportHeight, padding = 16) {
  const scale = clampScale(Math.min((viewportWidth - 2 * padding) / width, (viewportHeight - 2 * padding) / height));
  return {
    scale,
    offsetX: (viewportWidth - width * scale) / 2,
    offsetY: (viewportHeight - height * scale) / 2,
  };
}

export function clampScale(scale) {
  return Math.min(MAX_SCALE, Math.max(MIN_SCALE, scale));
}

export function screenToMask(view, sx, sy) {
  return [(sx - view.offsetX) / view.scale, (sy - view.offsetY) / view.scale];
}

export function maskToScreen(view, mx, my) {
  return [mx * view.scale + view.offsetX, my * view.scale + view.offsetY];
}

/** Zooms by `factor` keeping the mask point under the screen point (sx, sy) fixed. */
export function zoomAt(view, factor, sx, sy) {
  const scale = clampScale(view.scale * factor);
  const [mx, my] = screenToMask(view, sx, sy);
  return { scale, offsetX: sx - mx * scale, offsetY: sy - my * scale };
}

/** The zoom factor for a wheel event's deltaY (pixels): smooth for trackpads, one notch ≈ ×1.2 for mice. */
export function wheelZoomFactor(deltaY) {
  return Math.exp(-deltaY * 0.0015);
}

export function panBy(view, dx, dy) {
  return { scale: view.scale, offsetX: view.offsetX + dx, offsetY: view.offsetY + dy };
}
