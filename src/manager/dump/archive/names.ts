/**
 * Names as bytes and back, the way DumpEntry holds them (entry.ts), for the archive formats: the
 * storage keys' own encoding (src/shared/storage/keys.ts, Python's "surrogateescape").
 */
import { decodeKey, encodeKey, hasRawBytes } from '../../../shared/storage/keys.js';

export { hasRawBytes };

/** A name from its bytes: valid UTF-8 decoded, every other byte as a lone surrogate U+DC80–U+DCFF. */
export const decodeName = decodeKey;

/** The bytes `name` stands for; undefined when it holds a lone surrogate that is no escaped byte. */
export function encodeName(name: string): Buffer | undefined {
  try {
    return encodeKey(name);
  } catch {
    return undefined;
  }
}
