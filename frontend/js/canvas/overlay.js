// Compositing the mask overlay and the uncertainty heat-map into RGBA buffers (an ImageData's .data). The canvas
// panel draws the image, then these buffers scaled with smoothing off.

/**
 * Parses '#rrggbb' (or '#rgb') into [r, g, b].
 * @returns {[number, number, number]}
 */
export function parseHexColour(colour) {
  const match = /^#?([0-9a-f]{3}|[0-9a-f]{6})$/i.exec(colour);
  if (!match) throw new TypeError(`colour must be #rrggbb, got ${JSON.stringify(colour)}`);
  let hex = match[1];
  if (hex.length === 3) hex = [...hex].map((c) => c + c).join('');
  return [0, 2, 4].map((k) => parseInt(hex.slice(k, k + 2), 16));
}

/**
 * A lookup table of 256 RGBA entries for the overlay: class colours at `opacity`, transparent for hidden classes,
 * for class 0 (background is never tinted) and for labels beyond the schema.
 * @param {string[]} colours  '#rrggbb' per class
 * @param {Set<number>} hidden
 * @param {number} opacity  0..1
 */
export function overlayLookup(colours, hidden, opacity) {
  const table = new Uint8ClampedArray(256 * 4);
  const alpha = Math.round(Math.min(1, Math.max(0, opacity)) * 255);
  colours.forEach((colour, label) => {
    if (label === 0 || hidden.has(label)) return;
    const [r, g, b] = parseHexColour(colour);
    table.set([r, g, b, alpha], label * 4);
  });
  return table;
}

/**
 * Writes the overlay of rows y0..y1 (inclusive) of `mask` into `rgba`. With a `stroke` ({coverage, label}), covered
 * pixels show the stroke's label: the preview of a stroke still being drawn, before it becomes an operation.
 * @param {Uint8ClampedArray} rgba  width*height*4
 * @param {Uint8Array} mask
 * @param {number} width
 * @param {Uint8ClampedArray} lookup  from overlayLookup
 * @param {number} [y0]
 * @param {number} [y1]
 * @param {{coverage: Uint8Array, label: number} | null} [stroke]
 */
export function compositeOverlay(rgba, mask, width, lookup, y0 = 0, y1 = mask.length / width - 1, stroke = null) {
  const rgba32 = new Uint32Array(rgba.buffer, rgba.byteOffset, rgba.length / 4);
  const lookup32 = new Uint32Array(lookup.buffer, lookup.byteOffset, 256);
  const end = (y1 + 1) * width;
  if (stroke) {
    const { coverage, label } = stroke;
    for (let i = y0 * width; i < end; i++) rgba32[i] = lookup32[coverage[i] ? label : mask[i]];
  } else {
    for (let i = y0 * width; i < end; i++) rgba32[i] = lookup32[mask[i]];
  }
}

/**
 * Heat-map colour of an uncertainty in [0, 1]: transparent where the model is sure, through yellow to opaque red
 * where it is not, so the eye goes to the pixels worth correcting.
 * @returns {[number, number, number, number]}
 */
export function heatColour(u) {
  const t = Math.min(1, Math.max(0, u));
  return [255, Math.round(255 * (1 - t)), 0, Math.round(220 * t)];
}

/**
 * Writes the uncertainty heat-map into `rgba`; values are normalised by their maximum so any entropy scale reads.
 * @param {Uint8ClampedArray} rgba  width*height*4
 * @param {Float32Array} uncertainty  one value per pixel, >= 0
 */
export function compositeUncertainty(rgba, uncertainty) {
  let max = 0;
  for (const u of uncertainty) if (u > max) max = u;
  const scale = max > 0 ? 1 / max : 0;
  for (let i = 0; i < uncertainty.length; i++) rgba.set(heatColour(uncertainty[i] * scale), i * 4);
}
