import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deflateSync } from 'node:zlib';
import { crc32, decodeIndexPng, encodeIndexPng, readChunks, toBase64 } from '../../frontend/js/png.js';

test('crc32 of "IEND" is the well-known constant', () => {
  assert.equal(crc32(new TextEncoder().encode('IEND')), 0xae426082);
});

test('greyscale index PNG round-trips exactly', async () => {
  const width = 37;
  const height = 11;
  const data = Uint8Array.from({ length: width * height }, (_, i) => (i * 7) % 34);
  const png = await encodeIndexPng(width, height, data);
  const decoded = await decodeIndexPng(png);
  assert.equal(decoded.width, width);
  assert.equal(decoded.height, height);
  assert.deepEqual(decoded.data, data);
});

// A 4-bit palette PNG with every filter type, built by hand as Pillow writes small-palette masks.
function paletteFourBitPng(width, rows) {
  const chunk = (type, payload) => {
    const out = Buffer.alloc(12 + payload.length);
    out.writeUInt32BE(payload.length, 0);
    out.write(type, 4, 'ascii');
    Buffer.from(payload).copy(out, 8);
    out.writeUInt32BE(crc32(out.subarray(4, 8 + payload.length)), 8 + payload.length);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(rows.length, 4);
  header.set([4, 3, 0, 0, 0], 8);
  return new Uint8Array(Buffer.concat([
    Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', header),
    chunk('PLTE', Buffer.alloc(16 * 3, 128)), chunk('IDAT', deflateSync(Buffer.concat(rows))),
    chunk('IEND', Buffer.alloc(0)),
  ]));
}

test('4-bit palette PNG with sub/up/average/paeth filters decodes to the indices', async () => {
  // Pixels (4 wide): row0 [1,2,3,4], row1 [1,2,3,4], row2 [5,6,7,8], row3 [5,6,7,8]; packed two per byte.
  const rows = [
    Buffer.from([1, 0x12, 0x22]), // sub: 0x12, then 0x34 - 0x12 = 0x22
    Buffer.from([2, 0x00, 0x00]), // up: same as the row above
    Buffer.from([3, 0x56 - (0x12 >> 1), 0x78 - ((0x56 + 0x34) >> 1)]), // average
    Buffer.from([4, 0x00, 0x00]), // paeth predicts 'up' here
  ];
  const decoded = await decodeIndexPng(paletteFourBitPng(4, rows));
  assert.deepEqual([...decoded.data], [1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8, 5, 6, 7, 8]);
});

test('non-PNG and colour PNGs are refused with a reason', async () => {
  assert.throws(() => readChunks(new Uint8Array([1, 2, 3])), /not a PNG/);
  const png = await encodeIndexPng(1, 1, new Uint8Array(1));
  png[8 + 8 + 9] = 2; // IHDR colour type → RGB
  await assert.rejects(decodeIndexPng(png), /palette or greyscale/);
});

test('toBase64 matches Buffer', () => {
  const bytes = Uint8Array.from({ length: 70000 }, (_, i) => i % 251);
  assert.equal(toBase64(bytes), Buffer.from(bytes).toString('base64'));
});
