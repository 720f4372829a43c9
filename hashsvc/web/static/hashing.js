/*
 * hashsvc: hashing pictures in the browser, so that a victim's images never leave the device.
 *
 * Plain JavaScript, no dependencies, no eval, no WebAssembly: served as a static file under a
 * strict Content-Security-Policy. It defines one global:
 *
 *   globalThis.HashsvcHash = {
 *     version: 1,
 *     supported(file) -> {ok: boolean, reason?: string},
 *     async hashFile(file, name?, onProgress?) -> hash line,
 *   }
 *
 * The hash line is what `hashsvc hash` prints and POST /v1/cases/{id}/hashes accepts (without
 * local features, which only the command-line tool makes), plus "hashed_in": "browser".
 *
 * The pipeline mirrors hashsvc/decode.py and hashsvc/hashing.py step by step:
 *   decode (the browser's decoder, no colour management, read back in strips of rows)
 *   -> for JPEG, a box reduction standing in for libjpeg's DCT scaling (Pillow's draft mode)
 *   -> decode.py's _reduce (Pillow's Image.reduce, ported exactly, premultiplied for RGBA)
 *   -> EXIF orientation (JPEG, PNG, WebP) applied after reducing, as Pillow's exif_transpose
 *   -> transparency flattened onto white (Pillow's alpha_composite, ported exactly)
 *   -> 128x128 with Pillow's BILINEAR resampling (ported exactly: Resample.c, 8 bits per channel)
 *   -> PDQ (Meta's reference C++ ported with float32 arithmetic emulated by Math.fround),
 *      its 8 dihedral variants hashed from the turned 128x128 picture, pHash and dHash
 *      (Pillow's "L" conversion and LANCZOS resampling, ported exactly).
 * Given the same decoded pixels the hashes are bit-identical to Python's; what differs is only
 * what the browser's decoder gives (a JPEG is decoded at full size here, at reduced size by
 * Python), which tests/test_browser_hashing.py measures.
 */
(function (root) {
  "use strict";

  const fround = Math.fround;

  /** Every perceptual hash reads the canonical picture squeezed to this square (hashing.py). */
  const HASH_SIDE = 128;
  /** The shorter side of the canonical picture is reduced toward [MIN_SIDE, 2 * MIN_SIDE). */
  const MIN_SIDE = 256;
  /** Decompression-bomb limit, as hashsvc's default max_pixels. */
  const MAX_PIXELS = 200000000;
  /** Pixels read back from the canvas at a time: huge photos are read in strips of rows. */
  const STRIP_PIXELS = 1 << 22;

  const CLI = "use the hashsvc command-line tool";
  const DIHEDRAL_NAMES = ["orig", "rot90", "rot180", "rot270", "flip_tb", "flip_lr",
    "transpose", "transverse"];

  // ------------------------------------------------------------------------------------------
  // Sniffing (decode.py's sniff), and what this browser page can and cannot read

  const HEIF_BRANDS = new Set(["heic", "heix", "hevc", "hevx", "heim", "heis", "hevm", "hevs",
    "mif1", "msf1", "mif2"]);
  const AVIF_BRANDS = new Set(["avif", "avis"]);
  const BMP_HEADER_SIZES = new Set([12, 40, 52, 56, 64, 108, 124]);

  function ascii(bytes, start, end) {
    let out = "";
    for (let i = start; i < end && i < bytes.length; i++) out += String.fromCharCode(bytes[i]);
    return out;
  }

  /** The format of bytes starting with `h` (a Uint8Array of at least 32 bytes):
   *  {format, kind: "image"|"unsupported"|"video"|"unknown"}. */
  function sniffBytes(h) {
    const image = (format) => ({format, kind: "image"});
    const video = {format: "video", kind: "video"};
    const four = ascii(h, 0, 4), six = ascii(h, 0, 6);
    if (h[0] === 0xff && h[1] === 0xd8 && h[2] === 0xff) return image("jpeg");
    if (ascii(h, 0, 8) === "\x89PNG\r\n\x1a\n") return image("png");
    if (six === "GIF87a" || six === "GIF89a") return image("gif");
    if (four === "RIFF" && ascii(h, 8, 12) === "WEBP") return image("webp");
    if (four === "II*\x00" || four === "MM\x00*") return {format: "tiff", kind: "unsupported"};
    if (ascii(h, 0, 2) === "BM" && h.length >= 18 && BMP_HEADER_SIZES.has(h[14])) {
      return image("bmp");
    }
    const box = ascii(h, 4, 8);
    if (box === "ftyp") {
      const size = ((h[0] << 24) >>> 0) + (h[1] << 16) + (h[2] << 8) + h[3];
      const brands = [ascii(h, 8, 12)];
      for (let i = 16; i < Math.min(size, h.length) - 3; i += 4) brands.push(ascii(h, i, i + 4));
      if (brands.some((b) => AVIF_BRANDS.has(b))) return {format: "avif", kind: "unsupported"};
      if (brands.some((b) => HEIF_BRANDS.has(b))) return {format: "heif", kind: "unsupported"};
      return video; // MP4, QuickTime, 3GP...
    }
    if (["moov", "mdat", "wide", "free", "skip"].includes(box)) return video; // old QuickTime
    const starts = (...bytes) => bytes.every((b, i) => h[i] === b);
    if (starts(0x1a, 0x45, 0xdf, 0xa3)) return video; // Matroska, WebM
    if (four === "RIFF" && ascii(h, 8, 11) === "AVI") return video;
    if (starts(0, 0, 1, 0xba) || starts(0, 0, 1, 0xb3)) return video; // MPEG
    if (ascii(h, 0, 3) === "FLV") return video;
    if (starts(0x30, 0x26, 0xb2, 0x75)) return video; // ASF, WMV
    if (h.length > 188 && h[0] === 0x47 && h[188] === 0x47) return video; // MPEG-TS
    return {format: null, kind: "unknown"};
  }

  const REASONS = {
    heif: "this browser cannot read HEIC photos; " + CLI +
      " (or set the phone to save photos as JPEG)",
    avif: "this browser cannot read AVIF (HEIF) photos here; " + CLI,
    tiff: "this browser cannot read TIFF images; " + CLI,
    video: "videos cannot be hashed in the browser; " + CLI,
    unknown: "this file is not a picture that can be hashed here (JPEG, PNG, GIF, WebP or BMP); " +
      "if it is a photo or a video, " + CLI,
    empty: "this file is empty",
  };

  function verdict(sniffed, size) {
    if (size === 0) return {ok: false, reason: REASONS.empty};
    if (sniffed.kind === "image") return {ok: true};
    if (sniffed.kind === "video") return {ok: false, reason: REASONS.video};
    if (sniffed.kind === "unsupported") return {ok: false, reason: REASONS[sniffed.format]};
    return {ok: false, reason: REASONS.unknown};
  }

  const TYPE_FORMATS = {
    "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/pjpeg": "jpeg", "image/png": "png",
    "image/apng": "png", "image/gif": "gif", "image/webp": "webp", "image/bmp": "bmp",
    "image/x-ms-bmp": "bmp", "image/heic": "heif", "image/heif": "heif",
    "image/heic-sequence": "heif", "image/heif-sequence": "heif", "image/avif": "avif",
    "image/tiff": "tiff", "image/x-tiff": "tiff",
  };
  const EXT_FORMATS = {
    jpg: "jpeg", jpeg: "jpeg", jpe: "jpeg", jfif: "jpeg", png: "png", apng: "png", gif: "gif",
    webp: "webp", bmp: "bmp", dib: "bmp", heic: "heif", heif: "heif", hif: "heif",
    avif: "avif", tif: "tiff", tiff: "tiff", mp4: "video", m4v: "video", mov: "video",
    qt: "video", "3gp": "video", "3g2": "video", mkv: "video", webm: "video", avi: "video",
    wmv: "video", mpg: "video", mpeg: "video", flv: "video", ts: "video", mts: "video",
  };

  /** Best guess without the bytes: from the MIME type, else the file name's extension. */
  function guessFromMetadata(file) {
    const type = typeof file.type === "string" ? file.type.toLowerCase() : "";
    let format = TYPE_FORMATS[type];
    if (!format && type.startsWith("video/")) format = "video";
    if (!format && typeof file.name === "string") {
      const dot = file.name.lastIndexOf(".");
      if (dot >= 0) format = EXT_FORMATS[file.name.slice(dot + 1).toLowerCase()];
    }
    if (!format) return {ok: file.size !== 0, ...(file.size === 0 ? {reason: REASONS.empty} : {})};
    const kind = format === "video" ? "video" : (format === "heif" || format === "avif" ||
      format === "tiff") ? "unsupported" : "image";
    return verdict({format, kind}, file.size);
  }

  function isBytes(x) {
    return x instanceof ArrayBuffer || ArrayBuffer.isView(x);
  }

  function asUint8(x) {
    if (x instanceof Uint8Array) return x;
    if (x instanceof ArrayBuffer) return new Uint8Array(x);
    return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  }

  async function sniffBlob(blob) {
    const head = new Uint8Array(await blob.slice(0, 256).arrayBuffer());
    return verdict(sniffBytes(head), blob.size);
  }

  /**
   * Can this page hash the file? Synchronously, a first answer from the file's type and name
   * (bytes given as an ArrayBuffer or typed array are sniffed at once). The answer is also a
   * thenable: `await supported(file)` reads the file's first bytes and answers from its content,
   * as decode.py does, e.g. for a HEIC photo renamed to .jpg.
   */
  function supported(file) {
    if (isBytes(file)) {
      const bytes = asUint8(file);
      return verdict(sniffBytes(bytes.subarray(0, 256)), bytes.length);
    }
    if (!file || typeof file.slice !== "function") {
      return {ok: false, reason: "not a file"};
    }
    const guess = guessFromMetadata(file);
    Object.defineProperty(guess, "then", {
      enumerable: false,
      value(resolve, reject) {
        return sniffBlob(file).then(resolve, reject);
      },
    });
    return guess;
  }

  // ------------------------------------------------------------------------------------------
  // Exact hashes: MD5 (RFC 1321) in plain JS, SHA-256 by WebCrypto (plain JS where absent)

  const MD5_S = [7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
    5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21];
  const MD5_K = new Int32Array([ // floor(abs(sin(i + 1)) * 2^32), RFC 1321
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613,
    0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193,
    0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d,
    0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
    0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122,
    0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
    0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244,
    0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
    0xeb86d391
  ]);

  function hexWordsLE(words) {
    let out = "";
    for (const w of words) {
      for (let b = 0; b < 4; b++) out += ((w >>> (8 * b)) & 0xff).toString(16).padStart(2, "0");
    }
    return out;
  }

  /** Pad a message as MD5 and SHA-256 both do (0x80, zeros, 64-bit length), into blocks. */
  function padded(bytes, bigEndian) {
    const n = bytes.length;
    const total = Math.ceil((n + 9) / 64) * 64;
    const tail = new Uint8Array(total - Math.floor(n / 64) * 64);
    const start = Math.floor(n / 64) * 64;
    tail.set(bytes.subarray(start));
    tail[n - start] = 0x80;
    const bits = n * 8;
    const lo = bits >>> 0;
    const hi = Math.floor(bits / 4294967296) >>> 0;
    const view = new DataView(tail.buffer);
    if (bigEndian) {
      view.setUint32(tail.length - 8, hi, false);
      view.setUint32(tail.length - 4, lo, false);
    } else {
      view.setUint32(tail.length - 8, lo, true);
      view.setUint32(tail.length - 4, hi, true);
    }
    return {head: bytes.subarray(0, start), tail};
  }

  function md5(bytes) {
    let a0 = 0x67452301, b0 = 0xefcdab89 | 0, c0 = 0x98badcfe | 0, d0 = 0x10325476;
    const m = new Int32Array(16);
    const block = (buf, off) => {
      for (let i = 0; i < 16; i++) {
        const o = off + 4 * i;
        m[i] = buf[o] | (buf[o + 1] << 8) | (buf[o + 2] << 16) | (buf[o + 3] << 24);
      }
      let a = a0, b = b0, c = c0, d = d0;
      for (let i = 0; i < 64; i++) {
        let f, g;
        if (i < 16) { f = (b & c) | (~b & d); g = i; }
        else if (i < 32) { f = (d & b) | (~d & c); g = (5 * i + 1) & 15; }
        else if (i < 48) { f = b ^ c ^ d; g = (3 * i + 5) & 15; }
        else { f = c ^ (b | ~d); g = (7 * i) & 15; }
        const t = d;
        d = c;
        c = b;
        const x = (a + f + MD5_K[i] + m[g]) | 0;
        b = (b + ((x << MD5_S[i]) | (x >>> (32 - MD5_S[i])))) | 0;
        a = t;
      }
      a0 = (a0 + a) | 0; b0 = (b0 + b) | 0; c0 = (c0 + c) | 0; d0 = (d0 + d) | 0;
    };
    const {head, tail} = padded(bytes, false);
    for (let off = 0; off < head.length; off += 64) block(head, off);
    for (let off = 0; off < tail.length; off += 64) block(tail, off);
    return hexWordsLE([a0, b0, c0, d0]);
  }

  const SHA_K = new Int32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2]);

  /** SHA-256 in plain JS, for pages served where WebCrypto is unavailable (plain http). */
  function sha256js(bytes) {
    const hs = new Int32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f,
      0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
    const w = new Int32Array(64);
    const rotr = (x, n) => (x >>> n) | (x << (32 - n));
    const block = (buf, off) => {
      for (let i = 0; i < 16; i++) {
        const o = off + 4 * i;
        w[i] = (buf[o] << 24) | (buf[o + 1] << 16) | (buf[o + 2] << 8) | buf[o + 3];
      }
      for (let i = 16; i < 64; i++) {
        const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
        const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
      }
      let [a, b, c, d, e, f, g, h] = hs;
      for (let i = 0; i < 64; i++) {
        const t1 = (h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) +
          SHA_K[i] + w[i]) | 0;
        const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      hs[0] += a; hs[1] += b; hs[2] += c; hs[3] += d;
      hs[4] += e; hs[5] += f; hs[6] += g; hs[7] += h;
    };
    const {head, tail} = padded(bytes, true);
    for (let off = 0; off < head.length; off += 64) block(head, off);
    for (let off = 0; off < tail.length; off += 64) block(tail, off);
    let out = "";
    for (const x of hs) out += (x >>> 0).toString(16).padStart(8, "0");
    return out;
  }

  async function sha256(bytes) {
    const subtle = root.crypto && root.crypto.subtle;
    if (subtle && typeof subtle.digest === "function") {
      try {
        const digest = new Uint8Array(await subtle.digest("SHA-256", bytes));
        return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
      } catch (e) {
        // fall through to the plain implementation
      }
    }
    return sha256js(bytes);
  }

  // ------------------------------------------------------------------------------------------
  // Facts from the file's headers that the browser's decoder does not tell

  /**
   * Where the EXIF block of a JPEG (first APP1 "Exif"), PNG (eXIf before the image data) or
   * WebP (EXIF chunk) lies, as Pillow finds it: {tiff, end, pngChunk?} or null.
   */
  function findExif(b, format) {
    const prefixed = (start) => (ascii(b, start, start + 6) === "Exif\x00\x00" ? start + 6 : start);
    if (format === "jpeg") {
      let i = 2;
      while (i + 4 <= b.length && b[i] === 0xff) {
        const marker = b[i + 1];
        if (marker === 0xff) { i += 1; continue; }
        if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
          i += 2;
          continue;
        }
        if (marker === 0xda || marker === 0xd9) break; // image data: no EXIF after this
        const len = (b[i + 2] << 8) | b[i + 3];
        if (marker === 0xe1 && ascii(b, i + 4, i + 10) === "Exif\x00\x00") {
          return {tiff: i + 10, end: Math.min(b.length, i + 2 + len)};
        }
        i += 2 + len;
      }
    } else if (format === "png") {
      let i = 8;
      while (i + 12 <= b.length) {
        const len = ((b[i] << 24) >>> 0) + (b[i + 1] << 16) + (b[i + 2] << 8) + b[i + 3];
        const type = ascii(b, i + 4, i + 8);
        if (type === "IDAT" || type === "IEND") break; // Pillow reads orientation before these
        if (type === "eXIf") {
          return {tiff: prefixed(i + 8), end: Math.min(b.length, i + 8 + len), pngChunk: i};
        }
        i += 12 + len;
      }
    } else if (format === "webp") {
      let i = 12;
      while (i + 8 <= b.length) {
        const len = b[i + 4] + (b[i + 5] << 8) + (b[i + 6] << 16) + ((b[i + 7] << 24) >>> 0);
        if (ascii(b, i, i + 4) === "EXIF") {
          return {tiff: prefixed(i + 8), end: Math.min(b.length, i + 8 + len)};
        }
        i += 8 + len + (len & 1);
      }
    }
    return null;
  }

  /**
   * The EXIF orientation (2-8) of an image file with where its value is stored, or null when
   * it has none, 1, or an unreadable one (a corrupt EXIF block must not stop the hashing).
   */
  function exifOrientation(b, format) {
    try {
      const exif = findExif(b, format);
      if (!exif) return null;
      const {tiff, end} = exif;
      const view = new DataView(b.buffer, b.byteOffset, end);
      const order = ascii(b, tiff, tiff + 2);
      if (order !== "II" && order !== "MM") return null;
      const le = order === "II";
      const ifd = tiff + view.getUint32(tiff + 4, le);
      const count = view.getUint16(ifd, le);
      for (let k = 0; k < count; k++) {
        const entry = ifd + 2 + 12 * k;
        if (view.getUint16(entry, le) !== 0x0112) continue;
        const type = view.getUint16(entry + 2, le);
        if (type !== 3 && type !== 4) return null;
        const value = type === 3 ? view.getUint16(entry + 8, le) : view.getUint32(entry + 8, le);
        if (value < 2 || value > 8) return null;
        return {value, pos: entry + 8, type, le, pngChunk: exif.pngChunk};
      }
    } catch (e) {
      // unreadable: treated as no orientation, as decode.py does
    }
    return null;
  }

  const CRC_TABLE = (() => {
    const table = new Int32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c;
    }
    return table;
  })();

  function crc32(b, start, end) {
    let c = -1;
    for (let i = start; i < end; i++) c = CRC_TABLE[(c ^ b[i]) & 0xff] ^ (c >>> 8);
    return (c ^ -1) >>> 0;
  }

  /**
   * A copy of the file whose EXIF orientation says 1, so that every browser decodes the
   * stored pixels (some turn JPEG and PNG but not WebP); the page turns them itself, after
   * reducing, in the order decode.py does.
   */
  function withoutOrientation(b, found) {
    const copy = b.slice();
    const view = new DataView(copy.buffer);
    if (found.type === 3) view.setUint16(found.pos, 1, found.le);
    else view.setUint32(found.pos, 1, found.le);
    if (found.pngChunk !== undefined) {
      const i = found.pngChunk;
      const len = view.getUint32(i, false);
      view.setUint32(i + 8 + len, crc32(copy, i + 4, i + 8 + len), false);
    }
    return copy;
  }

  /** Pillow's exif_transpose of RGB pixels: the picture as EXIF orientation says to show it. */
  function orient(rgb, width, height, orientation) {
    const swap = orientation >= 5;
    const outW = swap ? height : width, outH = swap ? width : height;
    const out = new Uint8Array(rgb.length);
    for (let y = 0; y < outH; y++) {
      for (let x = 0; x < outW; x++) {
        let sx, sy; // the stored pixel shown at (x, y)
        switch (orientation) {
          case 2: sx = width - 1 - x; sy = y; break; // FLIP_LEFT_RIGHT
          case 3: sx = width - 1 - x; sy = height - 1 - y; break; // ROTATE_180
          case 4: sx = x; sy = height - 1 - y; break; // FLIP_TOP_BOTTOM
          case 5: sx = y; sy = x; break; // TRANSPOSE
          case 6: sx = y; sy = height - 1 - x; break; // ROTATE_270 (clockwise)
          case 7: sx = width - 1 - y; sy = height - 1 - x; break; // TRANSVERSE
          default: sx = width - 1 - y; sy = x; break; // 8: ROTATE_90 (anticlockwise)
        }
        const i = (y * outW + x) * 3, j = (sy * width + sx) * 3;
        out[i] = rgb[j]; out[i + 1] = rgb[j + 1]; out[i + 2] = rgb[j + 2];
      }
    }
    return {rgb: out, width: outW, height: outH};
  }

  /** PNG colour type (3 = palette, which Pillow opens as mode "P"), or -1. */
  function pngColourType(b) {
    return b.length > 25 && ascii(b, 12, 16) === "IHDR" ? b[25] : -1;
  }

  // ------------------------------------------------------------------------------------------
  // Pillow's arithmetic: reduce (Reduce.c), premultiplication and alpha_composite (Convert.c,
  // AlphaComposite.c), "L" conversion (Convert.c), resampling (Resample.c)

  const reduceMultipliers = new Map();

  /** Reduce.c's division_UINT32(n, 8): 2^32 / (256 n), computed in float32 and truncated. */
  function reduceMultiplier(n) {
    let m = reduceMultipliers.get(n);
    if (m === undefined) {
      m = Math.trunc(fround(4294967296 / fround(256 * n)));
      reduceMultipliers.set(n, m);
    }
    return m;
  }

  function muldiv255(a, b) {
    const t = a * b + 128;
    return ((t >> 8) + t) >> 8;
  }

  /** Pillow's alpha_composite of one channel value with alpha `a` over opaque white. */
  function overWhite(c, a) {
    if (a === 0) return 255;
    const coef1 = Math.floor((a * 255 * 255 * 128) / (a * 255 + 255 * (255 - a)));
    const coef2 = 255 * 128 - coef1;
    const t = c * coef1 + 255 * coef2 + (0x80 << 7);
    return (((t >>> 8) + t) >>> 8) >>> 7;
  }

  /**
   * Image.reduce(factor) fed one row at a time (so that huge pictures can be read in strips):
   * the sums of each factor x factor block, rounded as Reduce.c does, the partial blocks on
   * the right and at the bottom.
   */
  class RowReducer {
    constructor(width, height, factor) {
      this.width = width;
      this.height = height;
      this.outW = Math.ceil(width / factor);
      this.outH = Math.ceil(height / factor);
      const counts = (size, out) => { // pixels in each block along one side
        const c = new Int32Array(out).fill(factor);
        if (size % factor) c[out - 1] = size % factor;
        return c;
      };
      this.colCounts = counts(width, this.outW);
      this.rowCounts = counts(height, this.outH);
      this.acc = new Uint32Array(this.outW * 4); // sums of factor^2 bytes at most
      this.out = new Uint8Array(this.outW * this.outH * 4);
      this.outRow = 0;
      this.rowsInBlock = 0;
    }

    /** Add one row of RGBA pixels (Uint8 array from `offset`, `width` pixels). */
    push(row, offset) {
      const acc = this.acc, counts = this.colCounts;
      for (let ox = 0, i = offset, o = 0; ox < this.outW; ox++, o += 4) {
        let r = 0, g = 0, b = 0, a = 0;
        for (const end = i + 4 * counts[ox]; i < end; i += 4) {
          r += row[i]; g += row[i + 1]; b += row[i + 2]; a += row[i + 3];
        }
        acc[o] += r; acc[o + 1] += g; acc[o + 2] += b; acc[o + 3] += a;
      }
      if (++this.rowsInBlock === this.rowCounts[this.outRow]) {
        const out = this.out, base = this.outRow * this.outW * 4;
        for (let ox = 0; ox < this.outW; ox++) {
          const n = this.rowsInBlock * this.colCounts[ox];
          const mult = reduceMultiplier(n), amend = n >> 1;
          for (let c = 0; c < 4; c++) {
            out[base + ox * 4 + c] = Math.floor(((acc[ox * 4 + c] + amend) * mult) / 16777216);
          }
        }
        acc.fill(0);
        this.rowsInBlock = 0;
        this.outRow++;
      }
    }
  }

  function reduceImage(rgba, width, height, factor) {
    const reducer = new RowReducer(width, height, factor);
    for (let y = 0; y < height; y++) reducer.push(rgba, y * width * 4);
    return {rgba: reducer.out, width: reducer.outW, height: reducer.outH};
  }

  function bilinearFilter(x) {
    if (x < 0) x = -x;
    return x < 1 ? 1 - x : 0;
  }

  function sinc(x) {
    if (x === 0) return 1;
    x *= Math.PI;
    return Math.sin(x) / x;
  }

  function lanczosFilter(x) {
    return (-3 <= x && x < 3) ? sinc(x) * sinc(x / 3) : 0;
  }

  const FILTERS = {
    bilinear: {fn: bilinearFilter, support: 1},
    lanczos: {fn: lanczosFilter, support: 3},
  };
  const PRECISION_BITS = 22; // 32 - 8 - 2

  /** Resample.c's precompute_coeffs + normalize_coeffs_8bpc: bounds and integer weights. */
  function coefficients(inSize, outSize, filter) {
    const scale = inSize / outSize;
    const filterscale = scale < 1 ? 1 : scale;
    const support = filter.support * filterscale;
    const ksize = Math.ceil(support) * 2 + 1;
    const bounds = new Int32Array(outSize * 2);
    const kk = new Int32Array(outSize * ksize);
    const w = new Float64Array(ksize);
    for (let xx = 0; xx < outSize; xx++) {
      const center = (xx + 0.5) * scale;
      const ss = 1 / filterscale;
      let xmin = Math.trunc(center - support + 0.5);
      if (xmin < 0) xmin = 0;
      let xmax = Math.trunc(center + support + 0.5);
      if (xmax > inSize) xmax = inSize;
      xmax -= xmin;
      let ww = 0;
      for (let x = 0; x < xmax; x++) {
        w[x] = filter.fn((x + xmin - center + 0.5) * ss);
        ww += w[x];
      }
      for (let x = 0; x < xmax; x++) {
        const k = ww !== 0 ? w[x] / ww : w[x];
        kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * (1 << PRECISION_BITS))
          : Math.trunc(0.5 + k * (1 << PRECISION_BITS));
      }
      bounds[xx * 2] = xmin;
      bounds[xx * 2 + 1] = xmax;
    }
    return {bounds, kk, ksize};
  }

  function clip8(ss) {
    const v = ss >> PRECISION_BITS;
    return v < 0 ? 0 : v > 255 ? 255 : v;
  }

  /** Image.resize((outW, outH), filter) of an 8-bit image with `bands` interleaved channels. */
  function resample(src, width, height, bands, outW, outH, filterName) {
    if (width === outW && height === outH) return src.slice();
    const filter = FILTERS[filterName];
    let img = src, w = width;
    const half = 1 << (PRECISION_BITS - 1);
    if (outW !== width) {
      const {bounds, kk, ksize} = coefficients(width, outW, filter);
      const out = new Uint8Array(outW * height * bands);
      for (let y = 0; y < height; y++) {
        const rowIn = y * width * bands, rowOut = y * outW * bands;
        for (let xx = 0; xx < outW; xx++) {
          const xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1], k = xx * ksize;
          for (let c = 0; c < bands; c++) {
            let ss = half;
            for (let x = 0; x < xmax; x++) ss += img[rowIn + (x + xmin) * bands + c] * kk[k + x];
            out[rowOut + xx * bands + c] = clip8(ss);
          }
        }
      }
      img = out;
      w = outW;
    }
    if (outH !== height) {
      const {bounds, kk, ksize} = coefficients(height, outH, filter);
      const out = new Uint8Array(w * outH * bands);
      for (let yy = 0; yy < outH; yy++) {
        const ymin = bounds[yy * 2], ymax = bounds[yy * 2 + 1], k = yy * ksize;
        for (let i = 0; i < w * bands; i++) {
          let ss = half;
          for (let y = 0; y < ymax; y++) ss += img[(y + ymin) * w * bands + i] * kk[k + y];
          out[yy * w * bands + i] = clip8(ss);
        }
      }
      img = out;
    }
    return img;
  }

  /** Pillow's convert("L") of RGB pixels, in fixed point (Convert.c's L24):
   *  (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16. */
  function toGrey(rgb, n) {
    const out = new Uint8Array(n);
    for (let i = 0, j = 0; i < n; i++, j += 3) {
      out[i] = (rgb[j] * 19595 + rgb[j + 1] * 38470 + rgb[j + 2] * 7471 + 0x8000) >> 16;
    }
    return out;
  }

  // ------------------------------------------------------------------------------------------
  // PDQ: Meta's reference implementation (ThreatExchange pdq/cpp: pdqhashing.cpp,
  // downscaling.cpp, torben.cpp) with every float32 operation rounded by Math.fround, so that
  // the bits are those of the pdqhash package that hashing.py calls.

  const DCT64 = (() => {
    const d = new Float32Array(16 * 64);
    const scale = fround(Math.sqrt(2 / 64));
    for (let i = 0; i < 16; i++) {
      for (let j = 0; j < 64; j++) {
        d[i * 64 + j] = scale * Math.cos((Math.PI / 2 / 64) * (i + 1) * (2 * j + 1));
      }
    }
    return d;
  })();

  function jaroszWindow(oldDimension, newDimension) {
    return Math.floor((oldDimension + 2 * newDimension - 1) / (2 * newDimension));
  }

  function box1D(input, inOff, output, outOff, length, stride, fullWindow) {
    const half = Math.floor((fullWindow + 2) / 2);
    const p1 = half - 1, p2 = fullWindow - half + 1, p3 = length - fullWindow, p4 = half - 1;
    let li = inOff, ri = inOff, oi = outOff, sum = 0, cur = 0;
    for (let i = 0; i < p1; i++) { sum = fround(sum + input[ri]); cur++; ri += stride; }
    for (let i = 0; i < p2; i++) {
      sum = fround(sum + input[ri]); cur++;
      output[oi] = fround(sum / cur);
      ri += stride; oi += stride;
    }
    for (let i = 0; i < p3; i++) {
      sum = fround(sum + input[ri]);
      sum = fround(sum - input[li]);
      output[oi] = fround(sum / cur);
      li += stride; ri += stride; oi += stride;
    }
    for (let i = 0; i < p4; i++) {
      sum = fround(sum - input[li]); cur--;
      output[oi] = fround(sum / cur);
      li += stride; oi += stride;
    }
  }

  /** The 16x16 DCT output (float32, row-major) and quality of a float luma picture. */
  function pdqFloat(luma, rows, cols) {
    const buf1 = Float32Array.from(luma), buf2 = new Float32Array(rows * cols);
    const a = new Float32Array(64 * 64);
    if (rows === 64 && cols === 64) {
      a.set(buf1);
    } else {
      const wRows = jaroszWindow(cols, 64), wCols = jaroszWindow(rows, 64);
      for (let pass = 0; pass < 2; pass++) {
        for (let i = 0; i < rows; i++) box1D(buf1, i * cols, buf2, i * cols, cols, 1, wRows);
        for (let j = 0; j < cols; j++) box1D(buf2, j, buf1, j, rows, cols, wCols);
      }
      for (let outi = 0; outi < 64; outi++) {
        const ini = Math.trunc(((outi + 0.5) * rows) / 64);
        for (let outj = 0; outj < 64; outj++) {
          const inj = Math.trunc(((outj + 0.5) * cols) / 64);
          a[outi * 64 + outj] = buf1[ini * cols + inj];
        }
      }
    }
    // Quality: sum of quantised gradients (pdqImageDomainQualityMetric), int d = (u-v)*100/255.
    const step = (u, v) => Math.abs(Math.trunc(fround(fround(fround(u - v) * 100) / 255)));
    let gradientSum = 0;
    for (let i = 0; i < 63; i++) {
      for (let j = 0; j < 64; j++) gradientSum += step(a[i * 64 + j], a[(i + 1) * 64 + j]);
    }
    for (let i = 0; i < 64; i++) {
      for (let j = 0; j < 63; j++) gradientSum += step(a[i * 64 + j], a[i * 64 + j + 1]);
    }
    const quality = Math.min(100, Math.trunc(gradientSum / 90));
    // B = D A D^T with T = D A (dct64To16).
    const t = new Float32Array(16 * 64), b = new Float32Array(256);
    for (let i = 0; i < 16; i++) {
      for (let j = 0; j < 64; j++) {
        let sum = 0;
        for (let k = 0; k < 64; k++) sum = fround(sum + fround(DCT64[i * 64 + k] * a[k * 64 + j]));
        t[i * 64 + j] = sum;
      }
    }
    for (let i = 0; i < 16; i++) {
      for (let j = 0; j < 16; j++) {
        let sum = 0;
        for (let k = 0; k < 64; k++) sum = fround(sum + fround(t[i * 64 + k] * DCT64[j * 64 + k]));
        b[i * 16 + j] = sum;
      }
    }
    return {dct: b, quality};
  }

  /** PDQ bits as hex: bit i*16+j set where the DCT value exceeds the median (Torben's, which
   *  for 256 values is the 128th smallest), bit 255 first. */
  function pdqHex(dct) {
    const median = Float32Array.from(dct).sort()[127];
    let hex = "";
    for (let k = 255; k >= 0; k -= 4) {
      let nibble = 0;
      for (let q = 0; q < 4; q++) nibble = (nibble << 1) | (dct[k - q] > median ? 1 : 0);
      hex += nibble.toString(16);
    }
    return hex;
  }

  /** pdqhash.compute's luma: float32 of R*0.299 + G*0.587 + B*0.114 computed in double. */
  function pdqLuma(rgb, n) {
    const luma = new Float32Array(n);
    for (let i = 0, j = 0; i < n; i++, j += 3) {
      luma[i] = rgb[j] * 0.299 + rgb[j + 1] * 0.587 + rgb[j + 2] * 0.114;
    }
    return luma;
  }

  /** The square luma picture turned as Pillow's transpose(op) turns the image. */
  function turn(src, n, name) {
    const out = new Float32Array(n * n);
    const m = n - 1;
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < n; c++) {
        let sr, sc;
        switch (name) {
          case "rot90": sr = c; sc = m - r; break; // anticlockwise
          case "rot180": sr = m - r; sc = m - c; break;
          case "rot270": sr = m - c; sc = r; break;
          case "flip_tb": sr = m - r; sc = c; break;
          case "flip_lr": sr = r; sc = m - c; break;
          case "transpose": sr = c; sc = r; break;
          case "transverse": sr = m - c; sc = m - r; break;
          default: sr = r; sc = c;
        }
        out[r * n + c] = src[sr * n + sc];
      }
    }
    return out;
  }

  // ------------------------------------------------------------------------------------------
  // pHash and dHash (hashing.py's _phash and _dhash)

  function bitsToHex(bits) {
    let hex = "";
    for (let i = 0; i < bits.length; i += 4) {
      hex += ((bits[i] << 3) | (bits[i + 1] << 2) | (bits[i + 2] << 1) | bits[i + 3]).toString(16);
    }
    return hex;
  }

  const DCT32 = (() => {
    const n = 32, d = new Float64Array(n * n);
    for (let k = 0; k < n; k++) {
      for (let i = 0; i < n; i++) d[k * n + i] = 2 * Math.cos(Math.PI * k * (2 * i + 1) / (2 * n));
    }
    return d;
  })();

  function phash(grey, side) {
    const small = resample(grey, side, side, 1, 32, 32, "lanczos");
    const m = new Float64Array(8 * 32); // D[:8] @ small
    for (let u = 0; u < 8; u++) {
      for (let j = 0; j < 32; j++) {
        let s = 0;
        for (let i = 0; i < 32; i++) s += DCT32[u * 32 + i] * small[i * 32 + j];
        m[u * 32 + j] = s;
      }
    }
    const low = new Float64Array(64); // (D small D^T)[:8, :8]
    for (let u = 0; u < 8; u++) {
      for (let v = 0; v < 8; v++) {
        let s = 0;
        for (let j = 0; j < 32; j++) s += m[u * 32 + j] * DCT32[v * 32 + j];
        low[u * 8 + v] = s;
      }
    }
    const sorted = Float64Array.from(low).sort();
    const median = (sorted[31] + sorted[32]) / 2;
    return bitsToHex(Array.from(low, (x) => (x > median ? 1 : 0)));
  }

  function dhash(grey, side) {
    const small = resample(grey, side, side, 1, 9, 8, "lanczos");
    const bits = [];
    for (let r = 0; r < 8; r++) {
      for (let c = 0; c < 8; c++) bits.push(small[r * 9 + c + 1] > small[r * 9 + c] ? 1 : 0);
    }
    return bitsToHex(bits);
  }

  /** Every perceptual hash of the canonical RGB picture (hashing.py's hash_picture). */
  function hashCanonical(rgb, width, height) {
    const square = resample(rgb, width, height, 3, HASH_SIDE, HASH_SIDE, "bilinear");
    const n = HASH_SIDE * HASH_SIDE;
    const luma = pdqLuma(square, n);
    const first = pdqFloat(luma, HASH_SIDE, HASH_SIDE);
    const variants = {orig: pdqHex(first.dct)};
    for (const name of DIHEDRAL_NAMES.slice(1)) {
      variants[name] = pdqHex(pdqFloat(turn(luma, HASH_SIDE, name), HASH_SIDE, HASH_SIDE).dct);
    }
    const grey = toGrey(square, n);
    return {
      hashes: {pdq: variants.orig, phash: phash(grey, HASH_SIDE), dhash: dhash(grey, HASH_SIDE)},
      quality: {pdq: first.quality},
      variants: {pdq: variants},
    };
  }

  // ------------------------------------------------------------------------------------------
  // Decoding to the canonical picture (decode.py's decode and _canonical)

  function decodeError(format) {
    const names = {jpeg: "JPEG", png: "PNG", gif: "GIF", webp: "WebP", bmp: "BMP"};
    return new Error("This " + (names[format] || "image") + " file could not be read: it may " +
      "be damaged or incomplete. If it opens on your device, try the hashsvc command-line tool.");
  }

  async function toBitmap(blob, format) {
    if (typeof root.createImageBitmap !== "function") {
      throw new Error("This browser cannot decode pictures for hashing; please use a recent " +
        "browser or the hashsvc command-line tool.");
    }
    try {
      return await root.createImageBitmap(blob, {
        imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none",
      });
    } catch (e) {
      if (e && e.name === "TypeError") {
        try {
          return await root.createImageBitmap(blob); // an older browser without the options
        } catch (e2) {
          throw decodeError(format);
        }
      }
      throw decodeError(format);
    }
  }

  function canvas2d(width, height) {
    const canvas = typeof root.OffscreenCanvas === "function"
      ? new root.OffscreenCanvas(width, height)
      : Object.assign(root.document.createElement("canvas"), {width, height});
    const ctx = canvas.getContext("2d", {willReadFrequently: true});
    if (!ctx) throw new Error("This browser cannot read pictures back for hashing.");
    ctx.imageSmoothingEnabled = false;
    return ctx;
  }

  const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

  /**
   * Decode, orient and reduce the file to the canonical RGB picture as decode.py does.
   * Returns {rgb, width, height (canonical), fullWidth, fullHeight (oriented original)}.
   */
  async function decodeCanonical(file, bytes, format, progress) {
    // EXIF orientation is applied here, after reducing, as decode.py does; the browser is
    // given a copy that says 1 so that it decodes the stored pixels whatever it supports.
    const exif = exifOrientation(bytes, format);
    const orientation = exif ? exif.value : 1;
    const source = exif ? new Blob([withoutOrientation(bytes, exif)], {type: file.type || ""})
      : file;
    const bitmap = await toBitmap(source, format);
    try {
      const W = bitmap.width, H = bitmap.height; // as stored
      if (!(W > 0 && H > 0)) throw decodeError(format);
      if (W * H > MAX_PIXELS) {
        throw new Error(`This picture is ${W}x${H} pixels, more than hashsvc reads ` +
          `(${MAX_PIXELS.toLocaleString("en")}); use the hashsvc command-line tool.`);
      }
      // Pillow's draft mode for JPEG: libjpeg's DCT scaling by 1/2, 1/4 or 1/8 keeping both
      // sides >= MIN_SIDE; the browser decodes at full size, so a box reduction stands in.
      let draft = 1;
      if (format === "jpeg") {
        const scale = Math.min(Math.floor(W / MIN_SIDE), Math.floor(H / MIN_SIDE));
        draft = scale >= 8 ? 8 : scale >= 4 ? 4 : scale >= 2 ? 2 : 1;
      }
      const draftW = Math.ceil(W / draft), draftH = Math.ceil(H / draft);
      let factor = Math.floor(Math.min(draftW, draftH) / MIN_SIDE);
      if (factor < 2) factor = 1;
      // GIFs and palette PNGs (Pillow mode "P") are flattened onto white before reducing;
      // RGBA pictures are reduced premultiplied (Image.reduce) and flattened afterwards.
      const flattenFirst = format === "gif" || (format === "png" && pngColourType(bytes) === 3);
      const firstFactor = draft > 1 ? draft : factor;
      const secondFactor = draft > 1 ? factor : 1;
      const premultiplied = !flattenFirst && firstFactor > 1;

      const reducer = firstFactor > 1
        ? new RowReducer(W, H, firstFactor) : null;
      const full = reducer ? null : new Uint8Array(W * H * 4);
      const stripRows = Math.max(1, Math.min(H, Math.floor(STRIP_PIXELS / W)));
      const ctx = canvas2d(W, stripRows);
      for (let y0 = 0; y0 < H; y0 += stripRows) {
        const rows = Math.min(stripRows, H - y0);
        ctx.clearRect(0, 0, W, stripRows);
        ctx.drawImage(bitmap, 0, y0, W, rows, 0, 0, W, rows);
        const data = ctx.getImageData(0, 0, W, rows).data;
        for (let i = 0; i < W * rows * 4; i += 4) {
          const a = data[i + 3];
          if (a === 255) continue;
          if (flattenFirst) {
            data[i] = overWhite(data[i], a);
            data[i + 1] = overWhite(data[i + 1], a);
            data[i + 2] = overWhite(data[i + 2], a);
            data[i + 3] = 255;
          } else if (premultiplied) {
            // The canvas keeps premultiplied pixels; re-premultiplying what getImageData gives
            // recovers them exactly, as Pillow's RGBA -> RGBa conversion makes them.
            data[i] = muldiv255(data[i], a);
            data[i + 1] = muldiv255(data[i + 1], a);
            data[i + 2] = muldiv255(data[i + 2], a);
          }
        }
        if (reducer) {
          for (let r = 0; r < rows; r++) reducer.push(data, r * W * 4);
        } else {
          full.set(data.subarray(0, W * rows * 4), y0 * W * 4);
        }
        progress(0.3 + 0.5 * Math.min(1, (y0 + rows) / H));
        if (rows < H) await tick();
      }
      let rgba = reducer ? reducer.out : full;
      let width = reducer ? reducer.outW : W, height = reducer ? reducer.outH : H;
      if (secondFactor > 1) {
        ({rgba, width, height} = reduceImage(rgba, width, height, secondFactor));
      }
      const n = width * height;
      const rgb = new Uint8Array(n * 3);
      for (let i = 0, j = 0; i < n; i++, j += 3) {
        const a = rgba[i * 4 + 3];
        let r = rgba[i * 4], g = rgba[i * 4 + 1], b = rgba[i * 4 + 2];
        if (a !== 255) {
          if (premultiplied && a !== 0) { // RGBa -> RGBA (Convert.c's rgba2rgbA)
            r = Math.min(255, Math.floor((255 * r) / a));
            g = Math.min(255, Math.floor((255 * g) / a));
            b = Math.min(255, Math.floor((255 * b) / a));
          }
          r = overWhite(r, a); g = overWhite(g, a); b = overWhite(b, a);
        }
        rgb[j] = r; rgb[j + 1] = g; rgb[j + 2] = b;
      }
      const swap = orientation >= 5;
      const picture = orientation > 1 ? orient(rgb, width, height, orientation)
        : {rgb, width, height};
      return {...picture, fullWidth: swap ? H : W, fullHeight: swap ? W : H};
    } finally {
      if (typeof bitmap.close === "function") bitmap.close();
    }
  }

  // ------------------------------------------------------------------------------------------
  // The public interface

  /**
   * Hash one picture in the browser. Resolves to the hash line (a JSON-able object in the
   * format `hashsvc hash` prints); rejects with an Error whose message is meant for a person.
   */
  async function hashFile(file, name, onProgress) {
    const progress = (fraction) => {
      if (typeof onProgress === "function") {
        try { onProgress(fraction); } catch (e) { /* the page's callback must not stop us */ }
      }
    };
    if (!file || typeof file.arrayBuffer !== "function") {
      throw new Error("No file was given to hash.");
    }
    progress(0);
    let bytes;
    try {
      bytes = new Uint8Array(await file.arrayBuffer());
    } catch (e) {
      throw new Error("This file could not be read from your device; please choose it again.");
    }
    const sniffed = sniffBytes(bytes.subarray(0, 256));
    const answer = verdict(sniffed, bytes.length);
    if (!answer.ok) {
      throw new Error(answer.reason.charAt(0).toUpperCase() + answer.reason.slice(1) + ".");
    }
    progress(0.05);
    const line = {
      file: typeof name === "string" ? name : (typeof file.name === "string" ? file.name : ""),
      sha256: await sha256(bytes),
      md5: md5(bytes),
      size: bytes.length,
      format: sniffed.format,
    };
    progress(0.25);
    const picture = await decodeCanonical(file, bytes, sniffed.format, progress);
    const hashes = hashCanonical(picture.rgb, picture.width, picture.height);
    progress(1);
    return {
      ...line,
      width: picture.fullWidth,
      height: picture.fullHeight,
      hashes: hashes.hashes,
      quality: hashes.quality,
      variants: hashes.variants,
      hash_format: 1,
      hashed_in: "browser",
    };
  }

  root.HashsvcHash = Object.freeze({version: 1, supported, hashFile});
})(typeof globalThis !== "undefined" ? globalThis : self);
