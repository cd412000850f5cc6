/**
 * Names as bytes and back, the way DumpEntry holds them (entry.ts): valid UTF-8 decodes to its
 * characters; each byte that is not part of a valid UTF-8 sequence becomes one lone surrogate
 * U+DC80–U+DCFF (Python's "surrogateescape"), so every byte string round-trips exactly.
 */

const STRICT = new TextDecoder('utf-8', { fatal: true });

/** A lone surrogate: half of a pair without its other half. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Whether `name` holds bytes that are not UTF-8 (escaped as lone surrogates). */
export function hasRawBytes(name: string): boolean {
  return LONE_SURROGATE.test(name);
}

export function decodeName(bytes: Uint8Array): string {
  try {
    return STRICT.decode(bytes);
  } catch {
    // Not valid UTF-8: decode sequence by sequence below.
  }
  let out = '';
  let i = 0;
  while (i < bytes.length) {
    const n = validSequence(bytes, i);
    if (n === 0) {
      out += String.fromCharCode(0xdc00 + bytes[i]!);
      i++;
    } else {
      out += STRICT.decode(bytes.subarray(i, i + n));
      i += n;
    }
  }
  return out;
}

/** The length of the valid UTF-8 sequence at bytes[i], or 0 (RFC 3629: no overlongs, no surrogates, ≤ U+10FFFF). */
function validSequence(b: Uint8Array, i: number): number {
  const c = b[i]!;
  if (c < 0x80) return 1;
  const cont = (k: number, lo = 0x80, hi = 0xbf): boolean => i + k < b.length && b[i + k]! >= lo && b[i + k]! <= hi;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c === 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
  if ((c >= 0xe1 && c <= 0xec) || c === 0xee || c === 0xef) return cont(1) && cont(2) ? 3 : 0;
  if (c === 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;
  if (c === 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xf1 && c <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c === 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

/** The bytes `name` stands for; undefined when it holds a lone surrogate that is no escaped byte. */
export function encodeName(name: string): Buffer | undefined {
  if (!hasRawBytes(name)) return Buffer.from(name, 'utf8');
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 0xd800 || c > 0xdfff) continue;
    const next = name.charCodeAt(i + 1);
    if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
      i++;
      continue;
    }
    if (c < 0xdc80 || c > 0xdcff) return undefined;
    parts.push(Buffer.from(name.slice(start, i), 'utf8'), Buffer.of(c - 0xdc00));
    start = i + 1;
  }
  parts.push(Buffer.from(name.slice(start), 'utf8'));
  return Buffer.concat(parts);
}
