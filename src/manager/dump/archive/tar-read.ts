/**
 * ferry's own streaming tar reader. It parses the 512-byte headers straight from large chunks of the
 * file (or of its gunzip stream): tar-stream's extract made a stream per entry (~20 µs an entry, the
 * largest part of loading a tree of small files, which reads the archive twice).
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createGunzip } from 'node:zlib';
import { AbortedError, InvalidDumpError } from '../../../shared/errors.js';
import type { DumpCounters, DumpEntry } from '../entry.js';
import { NamespaceCheck } from '../validate.js';
import { decodeName } from './names.js';
import { archiveError, bridge, Consumer, type EntryCallback } from './common.js';

const CHUNK = 1 << 20;
/** The largest pax or GNU long-name record read (tar-stream's limit too): a bigger one is no name. */
const MAX_RECORD = 1 << 20;

/** The archive's bytes in large chunks, with a cursor; `total` counts every byte read so far. */
class Source {
  buf: Buffer = Buffer.alloc(0);
  pos = 0;
  total = 0;
  private readonly it: AsyncIterator<unknown>;
  constructor(input: AsyncIterable<unknown>) {
    this.it = input[Symbol.asyncIterator]();
  }

  get available(): number {
    return this.buf.length - this.pos;
  }

  /** The next chunk appended to what is left; false at the end of the input. */
  private async more(): Promise<boolean> {
    const r = await this.it.next();
    if (r.done) return false;
    const chunk = r.value as Buffer;
    this.total += chunk.length;
    this.buf = this.available === 0 ? chunk : Buffer.concat([this.buf.subarray(this.pos), chunk]);
    this.pos = 0;
    return true;
  }

  /** Makes `n` bytes available from `pos`; false when the input ends first. */
  async fill(n: number): Promise<boolean> {
    while (this.available < n) if (!(await this.more())) return false;
    return true;
  }

  /** Up to `max` bytes from `pos`, advancing past them; undefined at the end of the input. */
  async take(max: number): Promise<Buffer | undefined> {
    if (this.available === 0 && !(await this.more())) return undefined;
    const n = Math.min(max, this.available);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  /** Skips `n` bytes when the chunk at hand holds them (true), else does nothing (false). */
  skipHere(n: number): boolean {
    if (this.available < n) return false;
    this.pos += n;
    return true;
  }

  /** Skips `n` bytes; false when the input ends first. */
  async skip(n: number): Promise<boolean> {
    while (n > 0) {
      const b = await this.take(n);
      if (b === undefined) return false;
      n -= b.length;
    }
    return true;
  }

  /** Reads to the end of the input (a gzip stream checks its CRC and length trailer there). */
  async drain(): Promise<void> {
    this.buf = Buffer.alloc(0);
    this.pos = 0;
    while (await this.more()) this.buf = Buffer.alloc(0);
  }
}

/** A header's fields as read, before pax and GNU long-name records apply. */
interface RawHeader {
  type: number;
  name: Buffer;
  link: Buffer | undefined;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
}

/**
 * Reads a tar (or tar.gz) archive; see tar.ts readTar for the contract. `each` undefined: every
 * header and every byte is read and checked, nothing handed on (load's pass 1).
 */
export async function readTarArchive(file: string, gzip: boolean, each: EntryCallback | undefined, signal?: AbortSignal, linksOutside = false, entries?: number): Promise<DumpCounters> {
  const format = gzip ? 'tar.gz' : 'tar';
  signal?.throwIfAborted();
  const input = createReadStream(file, { highWaterMark: CHUNK });
  const gunzip = gzip ? createGunzip({ chunkSize: 256 * 1024 }) : undefined;
  if (gunzip) {
    input.on('error', (err) => gunzip.destroy(err));
    input.pipe(gunzip);
  }
  const stream = gunzip ?? input;
  // Its errors reach the reader through the iteration below; this keeps a late one from crashing the process.
  stream.on('error', () => undefined);
  const stop = (err?: Error): void => {
    input.destroy();
    stream.destroy(err);
  };
  const onAbort = (): void => stop(new AbortedError());
  signal?.addEventListener('abort', onAbort, { once: true });
  const src = new Source(stream);
  // Sized for the entries the first pass counted; on the first, for what the file's size allows
  // (an entry takes 1 KiB of a tar of small files), capped.
  const check = new NamespaceCheck(entries !== undefined ? NamespaceCheck.slotsFor(entries) : NamespaceCheck.slotsFor(await sizeOf(file, gzip), true), linksOutside);
  const consumer = each && new Consumer(each);
  const truncated = (why: string): InvalidDumpError => new InvalidDumpError(`${file}: the ${format} archive is truncated (${why})`);
  const corrupt = (why: string): InvalidDumpError => new InvalidDumpError(`${file}: the ${format} archive is corrupt (${why})`);
  let global: Record<string, string> | undefined;
  let pax: Record<string, string> | undefined;
  let longName: Buffer | undefined;
  let longLink: Buffer | undefined;
  try {
    for (;;) {
      signal?.throwIfAborted();
      // (The checks on `available` spare an await per call when the chunk at hand holds it all.)
      if (src.available < 512 && !(await src.fill(512))) {
        throw truncated(src.available === 0 ? 'it ends without the end-of-archive marker' : 'it ends inside a header');
      }
      const at = src.total - src.available;
      const h = src.buf.subarray(src.pos, src.pos + 512);
      src.pos += 512;
      const sum = checksum(h);
      if (sum === 0) {
        // The end-of-archive marker is two zero blocks; a lone one is skipped, as GNU tar and tar-stream do.
        if (!(await src.fill(512))) throw truncated('it ends without the end-of-archive marker');
        if (checksum(src.buf.subarray(src.pos, src.pos + 512)) === 0) {
          src.pos += 512;
          break;
        }
        continue;
      }
      const stored = numeric(h, 148, 8);
      if (stored !== sum + 256 && stored !== signedChecksum(h) + 256) throw corrupt(`the header at byte ${at} fails its checksum`);
      const raw = parseHeader(h);
      if (!(raw.size >= 0) || !Number.isSafeInteger(raw.size) || [raw.mode, raw.uid, raw.gid, raw.mtime].some(Number.isNaN)) {
        throw corrupt(`the header at byte ${at} holds a number that is not one`);
      }
      const flag = raw.type;
      // 'x' pax, 'g' pax global, 'L' GNU long name ('N' the old one), 'K' GNU long link name.
      if (flag === 0x78 || flag === 0x67 || flag === 0x4c || flag === 0x4e || flag === 0x4b) {
        if (raw.size > MAX_RECORD) throw corrupt(`a ${String.fromCharCode(flag)} record of ${raw.size} bytes`);
        if (!(await src.fill(raw.size))) throw truncated('it ends inside an entry');
        const body = Buffer.from(src.buf.subarray(src.pos, src.pos + raw.size));
        if (!(await src.skip(padded(raw.size)))) throw truncated('it ends inside an entry');
        if (flag === 0x78) pax = { ...global, ...parsePax(body) };
        else if (flag === 0x67) global = { ...global, ...parsePax(body) };
        else if (flag === 0x4b) longLink = cString(body);
        else longName = cString(body);
        continue;
      }
      const local = pax ?? global ?? {};
      if (local.size) {
        raw.size = Number(local.size);
        if (!Number.isSafeInteger(raw.size) || raw.size < 0) throw corrupt(`the pax size ${JSON.stringify(local.size)} at byte ${at} is not a size`);
      }
      const e = toEntry(raw, local, longName, longLink, check);
      pax = longName = longLink = undefined;
      check.add(e);
      // A directory's size is not data (tar-stream and GNU tar read none).
      const size = e.type === 'dir' ? 0 : raw.size;
      if (e.type === 'file' && e.linkTo === undefined) {
        if (consumer) {
          const r = handOn(e, src, consumer, truncated, signal);
          if (r) await r;
        }
        else if (!src.skipHere(size) && !(await src.skip(size))) throw truncated('it ends inside an entry');
        const pad = padded(size) - size;
        if (!src.skipHere(pad) && !(await src.skip(pad))) throw truncated('it ends inside an entry');
      } else {
        if (!src.skipHere(padded(size)) && !(await src.skip(padded(size)))) throw truncated('it ends inside an entry');
        if (consumer) {
          const r = consumer.call(e);
          if (r) await r;
        }
      }
    }
    signal?.throwIfAborted();
    // What follows the marker is padding to a record; reading it lets gzip check its trailer.
    if (gunzip) await src.drain();
    return check.counters;
  } catch (err) {
    stop(err as Error);
    throw archiveError(err, file, format, consumer);
  } finally {
    signal?.removeEventListener('abort', onAbort);
    if (!gunzip) input.destroy();
  }
}

/**
 * A file's data to the consumer: when it is all in the chunk at hand (a small file), whole, as a
 * copy (the chunk is not held); else streamed from the archive through bridge (backpressure, the
 * rest skipped when the consumer leaves it unread, a cut archive failing the stream).
 */
function handOn(e: DumpEntry, src: Source, consumer: Consumer, truncated: (why: string) => InvalidDumpError, signal?: AbortSignal): void | Promise<void> {
  const size = e.size;
  if (src.available >= size) {
    const bytes = Buffer.from(src.buf.subarray(src.pos, src.pos + size));
    src.pos += size;
    return consumer.call(e, bytes);
  }
  const source = async function* (): AsyncGenerator<Buffer> {
    let left = size;
    while (left > 0) {
      const b = await src.take(Math.min(left, CHUNK));
      if (b === undefined) throw truncated('it ends inside an entry');
      left -= b.length;
      yield b;
    }
  };
  return bridge(e, source(), consumer, (n, chunk) => (chunk !== undefined || n === size ? undefined : `${n} bytes of data where its header says ${size}`), signal);
}

/** About how many entries a tar of this file's size may hold (1 KiB each); 0 when gzipped or unknown. */
async function sizeOf(file: string, gzip: boolean): Promise<number> {
  if (gzip) return 0;
  const st = await stat(file).catch(() => undefined);
  return st ? Math.floor(st.size / 1024) : 0;
}

function padded(n: number): number {
  return Math.ceil(n / 512) * 512;
}

/** The sum of a header's bytes with its checksum field counted as spaces, less those 256. */
function checksum(h: Buffer): number {
  let sum = 0;
  for (let i = 0; i < 148; i++) sum += h[i]!;
  for (let i = 156; i < 512; i++) sum += h[i]!;
  return sum;
}

/** The same sum with bytes as signed chars, which some old tars wrote (GNU tar accepts both). */
function signedChecksum(h: Buffer): number {
  let sum = 0;
  for (let i = 0; i < 512; i++) {
    if (i === 148) i = 156;
    const b = h[i]!;
    sum += b >= 128 ? b - 256 : b;
  }
  return sum;
}

/** A numeric field: octal digits (leading spaces or zeros, ended by NUL or space), or base-256. */
function numeric(h: Buffer, at: number, len: number): number {
  const first = h[at]!;
  if (first & 0x80) {
    const negative = first === 0xff;
    if (!negative && first !== 0x80) return NaN;
    let v = 0;
    for (let i = at + 1; i < at + len; i++) v = v * 256 + (negative ? 0xff - h[i]! : h[i]!);
    return negative ? -v : v;
  }
  let i = at;
  const end = at + len;
  while (i < end && h[i] === 0x20) i++;
  let v = 0;
  for (; i < end; i++) {
    const c = h[i]!;
    if (c === 0 || c === 0x20) break;
    if (c < 0x30 || c > 0x37) return NaN;
    v = v * 8 + (c - 0x30);
  }
  return v;
}

/** A NUL-ended field's bytes (all of it when it holds no NUL). */
function field(h: Buffer, at: number, len: number): Buffer {
  const end = h.indexOf(0, at);
  return h.subarray(at, end < 0 || end > at + len ? at + len : end);
}

function cString(b: Buffer): Buffer {
  const end = b.indexOf(0);
  return end < 0 ? b : b.subarray(0, end);
}

function parseHeader(h: Buffer): RawHeader {
  let name = field(h, 0, 100);
  // ustar ("ustar\0"): a prefix field before the name; GNU's ("ustar  \0") and v7 headers have none.
  if (h[257] === 0x75 && h[258] === 0x73 && h[259] === 0x74 && h[260] === 0x61 && h[261] === 0x72 && h[262] === 0 && h[345] !== 0) {
    name = Buffer.concat([field(h, 345, 155), Buffer.of(0x2f), name]);
  }
  return {
    type: h[156]!,
    name,
    link: h[157] === 0 ? undefined : field(h, 157, 100),
    size: numeric(h, 124, 12),
    mode: numeric(h, 100, 8),
    uid: numeric(h, 108, 8),
    gid: numeric(h, 116, 8),
    mtime: numeric(h, 136, 12),
  };
}

/** Pax records "<length> <key>=<value>\n"; a malformed one ends them (as tar-stream reads them). */
function parsePax(b: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let at = 0;
  while (at < b.length) {
    const space = b.indexOf(0x20, at);
    if (space < 0) break;
    const len = Number.parseInt(b.toString('latin1', at, space), 10);
    if (!(len > 0) || at + len > b.length) break;
    const record = b.toString('utf8', space + 1, at + len - 1);
    const eq = record.indexOf('=');
    if (eq < 0) break;
    out[record.slice(0, eq)] = record.slice(eq + 1);
    at += len;
  }
  return out;
}

/** A tar header, with its pax and GNU long-name records, as a DumpEntry (not yet checked). */
function toEntry(h: RawHeader, pax: Record<string, string>, longName: Buffer | undefined, longLink: Buffer | undefined, check: NamespaceCheck): DumpEntry {
  const rawName = longName ?? h.name;
  // Names from ustar or GNU long-name fields are raw bytes (decodeName keeps those that are not
  // UTF-8); pax values are UTF-8 text.
  const nameText = pax.path ? paxName(pax.path, rawName) : decodeName(rawName);
  const linkBytes = longLink ?? h.link;
  const linkname = linkBytes === undefined && !pax.linkpath ? undefined : pax.linkpath ? paxName(pax.linkpath, rawName) : decodeName(linkBytes!);
  let path = stripDot(nameText);
  let type = h.type;
  // Old tars mark a directory by a trailing '/' on a plain file's name.
  if ((type === 0 || type === 0x30) && nameText.endsWith('/')) type = 0x35;
  if (type === 0x35 && path.endsWith('/')) path = path.slice(0, -1);
  const e: DumpEntry = { path, type: 'file', size: 0, mode: h.mode & 0o7777 };
  e.mtime = pax.mtime !== undefined ? Math.round(Number.parseFloat(pax.mtime) * 1000) : h.mtime * 1000;
  e.uid = pax.uid !== undefined ? Number(pax.uid) : h.uid;
  e.gid = pax.gid !== undefined ? Number(pax.gid) : h.gid;
  switch (type) {
    case 0:
    case 0x30: // '0'
    case 0x37: // '7' contiguous file
      if (Object.keys(pax).some((k) => k.startsWith('GNU.sparse.'))) throw refused(path, 'a GNU sparse file, which ferry does not restore');
      e.size = h.size;
      return e;
    case 0x35: // '5'
      e.type = 'dir';
      return e;
    case 0x32: // '2'
      e.type = 'symlink';
      e.target = linkname ?? '';
      return e;
    case 0x31: {
      // '1'
      const to = stripDot(linkname ?? '');
      e.linkTo = to;
      e.size = check.sizeOf(to) ?? 0;
      return e;
    }
    case 0x33:
      throw refused(path, 'a character device, which ferry does not restore (stores hold files, directories and symlinks)');
    case 0x34:
      throw refused(path, 'a block device, which ferry does not restore (stores hold files, directories and symlinks)');
    case 0x36:
      throw refused(path, 'a fifo, which ferry does not restore (stores hold files, directories and symlinks)');
    default:
      throw refused(path, 'an entry of a type ferry does not know (GNU sparse, multi-volume or volume label?)');
  }
}

function refused(path: string, what: string): InvalidDumpError {
  return new InvalidDumpError(`invalid dump entry ${JSON.stringify(path)}: ${what}; remove it from the archive`);
}

/** A name from a pax header; refused when its bytes were not UTF-8 (they cannot be read exactly). */
function paxName(value: string, name: Buffer): string {
  if (value.includes('\ufffd')) {
    throw new InvalidDumpError(`a pax header name ${JSON.stringify(value || decodeName(name))} is not valid UTF-8: its bytes cannot be read exactly, so the archive is refused`);
  }
  return value;
}

/** `./a/b` as `a/b`, `.` and `./` as the root: GNU tar writes `-C dir .` so. */
function stripDot(name: string): string {
  while (name.startsWith('./')) name = name.slice(2);
  return name === '.' ? '' : name;
}
