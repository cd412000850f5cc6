import { UnsafePathError } from '../errors.js';

/**
 * Key order is UTF-8 byte order (S3's order). For well-formed strings that is code-point order,
 * which differs from JavaScript's UTF-16 `<` only where a surrogate (U+D800..U+DFFF, used for
 * characters above U+FFFF) meets a code unit in U+E000..U+FFFF. A key that holds raw bytes (lone
 * surrogates U+DC80..U+DCFF, see encodeKey) sorts by those bytes: U+DCXY as the byte 0xXY, between
 * the UTF-8 encodings around it. Other lone surrogates sort as their 3-byte (WTF-8) encoding; two
 * keys of the same bytes (which only such malformed keys can be) sort by their UTF-16 code units.
 */
export function compareKeys(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  if (i === n) return a.length - b.length;
  const x = a.charCodeAt(i);
  const y = b.charCodeAt(i);
  const xs = x >= 0xd800 && x <= 0xdfff;
  const ys = y >= 0xd800 && y <= 0xdfff;
  if ((xs && isLone(a, i)) || (ys && isLone(b, i))) {
    // From the start of the code point that differs: a lone high surrogate before it is one too.
    const start = i > 0 && isHigh(a.charCodeAt(i - 1)) ? i - 1 : i;
    return compareBytesFrom(a, b, start) || (x < y ? -1 : 1);
  }
  // A surrogate stands for a code point above U+FFFF, greater than any code unit outside the range.
  if (xs !== ys) return xs ? 1 : -1;
  return x - y;
}

function isHigh(c: number): boolean {
  return c >= 0xd800 && c <= 0xdbff;
}

function isLow(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff;
}

/** Is the surrogate at `i` not half of a pair? */
function isLone(s: string, i: number): boolean {
  const c = s.charCodeAt(i);
  if (isHigh(c)) return !(i + 1 < s.length && isLow(s.charCodeAt(i + 1)));
  return !(i > 0 && isHigh(s.charCodeAt(i - 1)));
}

/**
 * The bytes of the code point at `i` of `s`, packed big-endian into a number, with their count and
 * where the next code point starts: UTF-8, a raw byte for U+DC80..U+DCFF alone, WTF-8 for any other
 * lone surrogate.
 */
function bytesAt(s: string, i: number, out: { bytes: number; count: number; next: number }): void {
  const c = s.charCodeAt(i);
  out.next = i + 1;
  if (c < 0x80) {
    out.bytes = c;
    out.count = 1;
  } else if (c < 0x800) {
    out.bytes = ((0xc0 | (c >> 6)) << 8) | (0x80 | (c & 0x3f));
    out.count = 2;
  } else if (isHigh(c) && i + 1 < s.length && isLow(s.charCodeAt(i + 1))) {
    const cp = 0x10000 + ((c - 0xd800) << 10) + (s.charCodeAt(i + 1) - 0xdc00);
    out.bytes = ((0xf0 | (cp >> 18)) * 0x1000000) + (((0x80 | ((cp >> 12) & 0x3f)) << 16) | ((0x80 | ((cp >> 6) & 0x3f)) << 8) | (0x80 | (cp & 0x3f)));
    out.count = 4;
    out.next = i + 2;
  } else if (c >= 0xdc80 && c <= 0xdcff) {
    out.bytes = c & 0xff;
    out.count = 1;
  } else {
    out.bytes = ((0xe0 | (c >> 12)) << 16) | ((0x80 | ((c >> 6) & 0x3f)) << 8) | (0x80 | (c & 0x3f));
    out.count = 3;
  }
}

/** Byte order of `a` and `b` from code unit `start` (a code point boundary in both), without allocating. */
function compareBytesFrom(a: string, b: string, start: number): number {
  const p = { bytes: 0, count: 0, next: start };
  const q = { bytes: 0, count: 0, next: start };
  let pi = 0;
  let qi = 0;
  for (;;) {
    if (pi === p.count) {
      if (p.next >= a.length) return q.next >= b.length && qi === q.count ? 0 : -1;
      bytesAt(a, p.next, p);
      pi = 0;
    }
    if (qi === q.count) {
      if (q.next >= b.length) return 1;
      bytesAt(b, q.next, q);
      qi = 0;
    }
    const x = Math.floor(p.bytes / 2 ** (8 * (p.count - 1 - pi++))) & 0xff;
    const y = Math.floor(q.bytes / 2 ** (8 * (q.count - 1 - qi++))) & 0xff;
    if (x !== y) return x - y;
  }
}

/** ES2024's String.prototype.isWellFormed (Node 20), which the ES2023 library does not declare. */
type WellFormed = { isWellFormed(): boolean };

/**
 * True when `key` holds a lone surrogate: raw bytes of a name that is not valid UTF-8 (encodeKey),
 * which only stores with `features.rawNames` can hold. About 20 ns for a short key.
 */
export function hasRawBytes(key: string): boolean {
  return !(key as string & WellFormed).isWellFormed();
}

/**
 * The name of `bytes` as a key: valid UTF-8 decodes as such, and each byte that is not part of a
 * well-formed UTF-8 sequence (a stray continuation byte, a truncated or overlong sequence, an
 * encoded surrogate, a code point above U+10FFFF) becomes the lone surrogate U+DC00 + byte, one per
 * byte: Python's PEP 383 "surrogateescape". Distinct byte strings give distinct keys.
 */
export function decodeKey(bytes: Uint8Array): string {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const text = buf.toString('utf8');
  // Valid UTF-8 (the common case) decodes without U+FFFD, unless the name holds U+FFFD itself.
  if (!text.includes('\uFFFD')) return text;
  let out = '';
  let from = 0;
  let i = 0;
  while (i < buf.length) {
    const n = sequenceLength(buf, i);
    if (n > 0) {
      i += n;
      continue;
    }
    out += buf.toString('utf8', from, i) + String.fromCharCode(0xdc00 + buf[i]!);
    i++;
    from = i;
  }
  return out + buf.toString('utf8', from, buf.length);
}

/** The length of the well-formed UTF-8 sequence at `i` (Unicode's table 3-7), or 0 when none starts there. */
function sequenceLength(b: Uint8Array, i: number): number {
  const c = b[i]!;
  if (c < 0x80) return 1;
  const cont = (k: number, lo = 0x80, hi = 0xbf) => i + k < b.length && b[i + k]! >= lo && b[i + k]! <= hi;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    const lo = c === 0xe0 ? 0xa0 : 0x80;
    const hi = c === 0xed ? 0x9f : 0xbf;
    return cont(1, lo, hi) && cont(2) ? 3 : 0;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    const lo = c === 0xf0 ? 0x90 : 0x80;
    const hi = c === 0xf4 ? 0x8f : 0xbf;
    return cont(1, lo, hi) && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

/**
 * Why `key` names no bytes, or undefined when it does: its lone surrogates must each be
 * U+DC80..U+DCFF and stand for bytes that are not valid UTF-8 where they are (else the same name
 * would have two keys: 'é' and U+DCC3 U+DCA9 are both the bytes C3 A9).
 */
export function rawKeyProblem(key: string): string | undefined {
  if (!hasRawBytes(key)) return undefined;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (isHigh(c) || isLow(c)) {
      if (!isLone(key, i)) {
        i += isHigh(c) ? 1 : 0;
        continue;
      }
      if (c < 0xdc80 || c > 0xdcff) return `it holds the lone surrogate U+${c.toString(16).toUpperCase()}, which stands for no byte`;
    }
  }
  if (decodeKey(bytesOf(key)) !== key) return 'its escaped bytes form valid UTF-8: the name has another key';
  return undefined;
}

/** encodeKey without the checks: lone surrogates outside U+DC80..U+DCFF as their WTF-8 bytes. */
function bytesOf(key: string): Buffer {
  if (!hasRawBytes(key)) return Buffer.from(key, 'utf8');
  const out = Buffer.allocUnsafe(key.length * 3);
  const at = { bytes: 0, count: 0, next: 0 };
  let n = 0;
  for (let i = 0; i < key.length; i = at.next) {
    bytesAt(key, i, at);
    for (let k = at.count - 1; k >= 0; k--) out[n++] = Math.floor(at.bytes / 2 ** (8 * k)) & 0xff;
  }
  return out.subarray(0, n);
}

/**
 * The bytes `key` names: its UTF-8, with each lone surrogate U+DC80..U+DCFF as the byte it stands
 * for (decodeKey's inverse: decodeKey(encodeKey(k)) === k). Throws UnsafePathError for a key that
 * names no bytes (rawKeyProblem).
 */
export function encodeKey(key: string): Buffer {
  if (!hasRawBytes(key)) return Buffer.from(key, 'utf8');
  const why = rawKeyProblem(key);
  if (why !== undefined) throw new UnsafePathError(`${JSON.stringify(key)} names no bytes: ${why}`);
  return bytesOf(key);
}

/** True when the key lies under `dir` (a key ending in '/'). */
export function isUnder(key: string, dir: string): boolean {
  return key.length > dir.length && key.startsWith(dir);
}

/** The parent directory key of a key ('a/b/c' → 'a/b/', 'a/b/' → 'a/', 'a' → ''). */
export function parentKey(key: string): string {
  const end = key.endsWith('/') ? key.length - 1 : key.length;
  const i = key.lastIndexOf('/', end - 1);
  return i < 0 ? '' : key.slice(0, i + 1);
}

/**
 * Why a key cannot name a path in a directory tree, or undefined when it can. Tree stores (file,
 * sftp, hdfs) refuse such keys in every method: '..' would leave the root, and '', '.', a leading
 * '/' or 'a//b' would give one file two keys (a sync would copy it and delete it as "extra").
 * Object stores hold such keys, so they reach tree stores from S3, OSS, COS and --files-from.
 */
export function treeKeyProblem(key: string): string | undefined {
  // One pass over the characters, no allocation: this runs for every key a tree store touches.
  const n = key.length;
  let start = 0;
  for (let i = 0; i <= n; i++) {
    const c = i < n ? key.charCodeAt(i) : 47; // a '/' after the end closes the last segment
    if (c === 0) return 'it contains a NUL character';
    if (c !== 47) continue;
    const len = i - start;
    if (len === 0 && i < n) return i === 0 ? "it starts with '/'" : "it has an empty segment ('//')";
    if (len === 1 && key.charCodeAt(start) === 46) return "it has a '.' segment";
    if (len === 2 && key.charCodeAt(start) === 46 && key.charCodeAt(start + 1) === 46) return "it has a '..' segment, which would leave the destination";
    start = i + 1;
  }
  return undefined;
}
