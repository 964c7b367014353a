// Choosing the square crop of an uploaded photo before it is sent: drag to draw a box, drag inside it to move it.

import { h } from './dom.js';
import { centredSquare, moveSquare, squareFromDrag } from '../canvas/crop.js';

const VIEW = 480;

/**
 * @param {File} file
 * @returns {Promise<File | null>} a square PNG of the chosen box, or null when cancelled; rejects if the browser
 *   cannot decode the file (the caller then lets the server explain what is wrong with it)
 */
export async function cropDialog(file) {
  const bitmap = await createImageBitmap(file);
  const { width, height } = bitmap;
  const scale = Math.min(VIEW / width, VIEW / height);
  const canvas = h('canvas', { width: Math.round(width * scale), height: Math.round(height * scale),
    class: 'crop-canvas', 'aria-label': 'Drag to choose the square crop' });
  const ctx = canvas.getContext('2d');
  let box = centredSquare(width, height);
  const draw = () => {
    ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    ctx.fillStyle = '#000a';
    const [x, y, side] = box.map((v) => v * scale);
    ctx.fillRect(0, 0, canvas.width, y);
    ctx.fillRect(0, y + side, canvas.width, canvas.height - y - side);
    ctx.fillRect(0, y, x, side);
    ctx.fillRect(x + side, y, canvas.width - x - side, side);
    ctx.strokeStyle = '#4f8cff';
    ctx.lineWidth = 2;
    ctx.strokeRect(x, y, side, side);
  };
  const toImage = (event) => {
    const rect = canvas.getBoundingClientRect();
    return [(event.clientX - rect.left) / scale, (event.clientY - rect.top) / scale];
  };
  let drag = null;
  canvas.addEventListener('pointerdown', (event) => {
    canvas.setPointerCapture(event.pointerId);
    const [px, py] = toImage(event);
    const [x, y, side] = box;
    drag = px >= x && px <= x + side && py >= y && py <= y + side ? { move: [px, py] } : { start: [px, py] };
  });
  canvas.addEventListener('pointermove', (event) => {
    if (!drag) return;
    const point = toImage(event);
    if (drag.move) {
      box = moveSquare(box, point[0] - drag.move[0], point[1] - drag.move[1], width, height);
      drag.move = point;
    } else {
      box = squareFromDrag(drag.start, point, width, height);
    }
    draw();
  });
  canvas.addEventListener('pointerup', () => { drag = null; });
  draw();
  return new Promise((resolve) => {
    const finish = (value) => { backdrop.remove(); bitmap.close(); resolve(value); };
    const use = h('button', { type: 'button', class: 'primary', title: 'Upload the boxed square' }, 'Crop and upload');
    const cancel = h('button', { type: 'button', title: 'Cancel (Esc)' }, 'Cancel');
    const backdrop = h('div', { class: 'modal-backdrop' }, h('div', { class: 'modal crop-dialog', role: 'dialog' },
      h('h2', {}, 'Crop the photo'), h('p', {}, 'Drag to draw a square, drag inside it to move it.'), canvas,
      h('div', { class: 'row' }, use, cancel)));
    cancel.addEventListener('click', () => finish(null));
    backdrop.addEventListener('keydown', (event) => { if (event.key === 'Escape') finish(null); });
    use.addEventListener('click', async () => {
      const [x, y, side] = box;
      const out = new OffscreenCanvas(side, side);
      out.getContext('2d').drawImage(bitmap, x, y, side, side, 0, 0, side, side);
      const blob = await out.convertToBlob({ type: 'image/png' });
      finish(new File([blob], file.name.replace(/\.\w+$/, '') + '-crop.png', { type: 'image/png' }));
    });
    document.body.append(backdrop);
    use.focus();
  });
}

/**
 * The file an upload sends: the crop the user chose, the file itself when the browser cannot decode it (the server
 * then says what is wrong with it), or null when the user cancelled.
 * @param {File} file
 * @returns {Promise<File | null>}
 */
export async function fileToUpload(file) {
  try {
    return await cropDialog(file);
  } catch {
    return file;
  }
}
