// Exact mask transfer as PNG: the server stores masks as palette ("P") or greyscale ("L") PNGs whose pixel values
// ARE the class indices. Drawing such a PNG on a canvas would give colours, not indices, so masks are decoded here:
// chunks parsed, IDAT inflated with the platform's DecompressionStream (zlib), scanline filters undone, 1/2/4/8-bit
// samples unpacked. Saving writes an 8-bit greyscale PNG the same way. Browser and Node 18+ both have the streams.

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

async function pipeThrough(bytes, stream) {
  const response = new Response(new Blob([bytes]).stream().pipeThrough(stream));
  return new Uint8Array(await response.arrayBuffer());
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

export function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Splits a PNG into its chunks [{type, data}]; throws if it is not a PNG. */
export function readChunks(bytes) {
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) throw new Error('this file is not a PNG image');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const chunks = [];
  let offset = 8;
  while (offset + 8 <= bytes.length) {
    const length = view.getUint32(offset);
    const type = String.fromCharCode(...bytes.subarray(offset + 4, offset + 8));
    if (offset + 12 + length > bytes.length) throw new Error(`PNG chunk ${type} is cut short`);
    chunks.push({ type, data: bytes.subarray(offset + 8, offset + 8 + length) });
    offset += 12 + length;
    if (type === 'IEND') break;
  }
  return chunks;
}

function paeth(a, b, c) {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/** Undoes PNG scanline filters in place (one byte per pixel-byte step `bpp`); returns the raw rows. */
export function unfilter(raw, rowBytes, height, bpp) {
  const out = new Uint8Array(rowBytes * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (rowBytes + 1)];
    const src = raw.subarray(y * (rowBytes + 1) + 1, (y + 1) * (rowBytes + 1));
    const row = out.subarray(y * rowBytes, (y + 1) * rowBytes);
    const prev = y > 0 ? out.subarray((y - 1) * rowBytes, y * rowBytes) : new Uint8Array(rowBytes);
    for (let x = 0; x < rowBytes; x++) {
      const left = x >= bpp ? row[x - bpp] : 0;
      const up = prev[x];
      const upLeft = x >= bpp ? prev[x - bpp] : 0;
      const predictor = [0, left, up, (left + up) >> 1, paeth(left, up, upLeft)][filter];
      if (predictor === undefined) throw new Error(`PNG row ${y} has unknown filter ${filter}`);
      row[x] = (src[x] + predictor) & 0xff;
    }
  }
  return out;
}

/**
 * Decodes a single-channel PNG (palette or greyscale, 1/2/4/8 bits, not interlaced) into its sample values.
 * @param {Uint8Array} bytes
 * @returns {Promise<{width: number, height: number, data: Uint8Array}>}
 */
export async function decodeIndexPng(bytes) {
  const chunks = readChunks(bytes);
  const header = chunks.find((c) => c.type === 'IHDR');
  if (!header) throw new Error('PNG has no IHDR chunk');
  const view = new DataView(header.data.buffer, header.data.byteOffset, header.data.byteLength);
  const width = view.getUint32(0);
  const height = view.getUint32(4);
  const [bitDepth, colourType, , , interlace] = header.data.subarray(8, 13);
  if (colourType !== 0 && colourType !== 3) {
    throw new Error(`a mask PNG must be palette or greyscale (colour type 0 or 3), got colour type ${colourType}`);
  }
  if (![1, 2, 4, 8].includes(bitDepth)) throw new Error(`mask PNG bit depth ${bitDepth} is not supported`);
  if (interlace) throw new Error('interlaced mask PNGs are not supported');
  const compressed = chunks.filter((c) => c.type === 'IDAT').map((c) => c.data);
  const raw = await pipeThrough(concat(compressed), new DecompressionStream('deflate'));
  const rowBytes = Math.ceil((width * bitDepth) / 8);
  if (raw.length < (rowBytes + 1) * height) throw new Error('PNG image data is cut short');
  const rows = unfilter(raw, rowBytes, height, 1);
  const data = new Uint8Array(width * height);
  const perByte = 8 / bitDepth;
  const maskBits = (1 << bitDepth) - 1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const byte = rows[y * rowBytes + Math.floor(x / perByte)];
      const shift = 8 - bitDepth * ((x % perByte) + 1);
      data[y * width + x] = (byte >> shift) & maskBits;
    }
  }
  return { width, height, data };
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) { out.set(part, offset); offset += part.length; }
  return out;
}

function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

/** Encodes class indices as an 8-bit greyscale PNG (the server reads the values back as classes). */
export async function encodeIndexPng(width, height, data) {
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header.set([8, 0, 0, 0, 0], 8);
  const raw = new Uint8Array((width + 1) * height); // filter byte 0 (none) before each row
  for (let y = 0; y < height; y++) raw.set(data.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  const compressed = await pipeThrough(raw, new CompressionStream('deflate'));
  return concat([Uint8Array.from(SIGNATURE), chunk('IHDR', header), chunk('IDAT', compressed),
    chunk('IEND', new Uint8Array(0))]);
}

/** Base64 of bytes, for JSON bodies. */
export function toBase64(bytes) {
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}
