import { once } from 'node:events';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { InvalidDumpError, SourceChangedError } from '../../../shared/errors.js';
import type { DumpCounters, DumpEntry } from '../entry.js';
import { NamespaceCheck } from '../validate.js';
import { encodeName, hasRawBytes } from './names.js';
import { Failure, type ArchiveWriter, type EntryCallback } from './common.js';
import { readTarArchive } from './tar-read.js';

/** Bytes gathered before a write goes out: a write per header and per small file made a system call each. */
const OUT_BYTES = 1 << 20;
const ZEROS = Buffer.alloc(1024);

/**
 * A tar (or tar.gz) writer: POSIX ustar headers, with pax extended headers for what ustar cannot
 * hold (long UTF-8 names and link targets, sizes of 8 GiB and more, large uids, mtimes out of
 * range) and GNU long-name records for long names that are not UTF-8 (pax holds UTF-8 text; GNU tar,
 * bsdtar and tar-stream read both). Short names go in the ustar fields byte for byte. It keeps every
 * entry type of a dump (files, directories, empty ones too, symlinks, hard links), modes, uid/gid and
 * mtimes (whole seconds).
 *
 * The headers are made here rather than by tar-stream's pack: its stream per entry cost ~22 µs an
 * entry (a 200,000-file tree: 5 s against GNU tar's 2.8 s for the whole job), and it writes every
 * name it cannot put in a ustar field as UTF-8 text, changing bytes that are not UTF-8. Headers and
 * small files are written straight into the output buffer (TarOut): no buffer or stream per entry.
 */
export function createTarWriter(out: Writable, gzip: boolean): ArchiveWriter {
  // A dump writes the links a tree holds, wherever they point; load decides what it restores.
  const check = new NamespaceCheck(undefined, true);
  const failure = new Failure();
  const output = new PassThrough({ highWaterMark: OUT_BYTES });
  const chain = (gzip ? [output, createGzip(), out] : [output, out]) as [Readable, Writable];
  const done = pipeline(chain).catch((err: unknown) => failure.set(err));
  const o = new TarOut(output, failure);

  /** What add() does when the fast path does not apply: records before the header, streams, a full buffer. */
  const addSlow = async (e: DumpEntry, header: Block, isData: boolean, data?: Readable | Buffer): Promise<void> => {
    // Refused before anything of the entry is written: a record left before the next header would be its.
    if (!isData || data === undefined) {
      if (data !== undefined && !Buffer.isBuffer(data)) data.resume();
      if (isData && e.size !== 0) throw new InvalidDumpError(`${JSON.stringify(e.path)}: a file of ${e.size} bytes without its data`);
    } else if (Buffer.isBuffer(data) && data.length !== e.size) throw changed(e, data.length);
    if (header.before !== undefined) await o.write(header.before);
    if (!isData || data === undefined) {
      await o.room(512);
      o.header(header);
      return;
    }
    if (Buffer.isBuffer(data)) {
      await o.room(512);
      o.header(header);
      await o.write(data);
      await o.write(padding(data.length));
      return;
    }
    await o.room(512);
    o.header(header);
    let n = 0;
    for await (const c of data) {
      n += (c as Buffer).length;
      if (n > e.size) break;
      await o.write(c as Buffer);
    }
    if (n !== e.size) {
      // The archive already holds part of this entry: it cannot go on.
      const err = changed(e, n);
      failure.set(err);
      throw err;
    }
    await o.write(padding(n));
  };

  return {
    // Synchronous for an entry whose header, and data given whole, fit in the output buffer (nearly
    // every entry of a tree of small files): no promise, no stream per entry.
    add(e: DumpEntry, data?: Readable | Buffer): void | Promise<void> {
      failure.throwIfSet();
      check.add(e);
      const header = tarHeader(e);
      const isData = e.type === 'file' && e.linkTo === undefined;
      if (header.before === undefined) {
        if (!isData && data === undefined && o.fits(512)) return o.header(header);
        if (isData && Buffer.isBuffer(data) && data.length === e.size) {
          const pad = padLength(data.length);
          if (o.fits(512 + data.length + pad)) {
            o.header(header);
            o.copy(data);
            o.skip(pad);
            return;
          }
        }
      }
      return addSlow(e, header, isData, data);
    },
    async finish(): Promise<void> {
      failure.throwIfSet();
      await o.write(ZEROS); // the end-of-archive marker: two zero blocks
      await o.flush();
      output.end();
      await failure.race(done);
      failure.throwIfSet();
    },
  };
}

/**
 * The archive's bytes on their way out, gathered into writes of OUT_BYTES. The buffer starts
 * zeroed: headers and padding are written into it without clearing (a fill per header was a call
 * into C++ per entry).
 */
class TarOut {
  private buf = Buffer.alloc(OUT_BYTES);
  private n = 0;
  constructor(
    private readonly output: Writable,
    private readonly failure: Failure,
  ) {}

  /** Whether `size` more bytes fit in the buffer. */
  fits(size: number): boolean {
    return this.n + size <= this.buf.length;
  }

  /** Room for `size` more bytes in the buffer, sending what it holds when they would not fit. False when they never fit. */
  async room(size: number): Promise<boolean> {
    if (this.n + size <= this.buf.length) return true;
    await this.flush();
    return size <= this.buf.length;
  }

  /** A header block in the room made for it. */
  header(b: Block): void {
    fillBlock(this.buf, this.n, b);
    this.n += 512;
  }

  copy(b: Uint8Array): void {
    this.buf.set(b, this.n);
    this.n += b.length;
  }

  /** `size` zero bytes (the buffer starts zeroed). */
  skip(size: number): void {
    this.n += size;
  }

  async write(b: Buffer): Promise<void> {
    if (await this.room(b.length)) this.copy(b);
    else if (!this.output.write(b)) await this.failure.race(once(this.output, 'drain'));
  }

  async flush(): Promise<void> {
    if (this.n === 0) return;
    const out = this.buf.subarray(0, this.n);
    this.buf = Buffer.alloc(OUT_BYTES);
    this.n = 0;
    if (!this.output.write(out)) await this.failure.race(once(this.output, 'drain'));
  }
}

function changed(e: DumpEntry, n: number): SourceChangedError {
  return new SourceChangedError(`${JSON.stringify(e.path)}: its data was ${n > e.size ? 'more' : `${n} bytes`}, not the ${e.size} bytes its entry says (it changed while being dumped?)`);
}

function padding(n: number): Buffer {
  return ZEROS.subarray(0, padLength(n));
}

/** Zero bytes after `n` bytes of data, to the end of their block. */
function padLength(n: number): number {
  return (512 - (n % 512)) % 512;
}

/** The header of one entry: the ustar block, with a GNU long-name or pax record to go before it when needed. */
function tarHeader(e: DumpEntry): Block {
  const type = e.type === 'dir' ? '5' : e.type === 'symlink' ? '2' : e.linkTo !== undefined ? '1' : '0';
  const name = bytesOf(e.path === '' ? './' : e.type === 'dir' ? `${e.path}/` : e.path, e.path);
  const link = e.type === 'symlink' ? bytesOf(e.target ?? '', e.path) : e.linkTo !== undefined ? bytesOf(e.linkTo, e.path) : undefined;
  const size = type === '0' ? e.size : 0;
  const mtime = Math.floor((e.mtime ?? Date.now()) / 1000);
  const uid = e.uid ?? 0;
  const gid = e.gid ?? 0;

  // Made only for the rare entry that needs them.
  let before: Buffer[] | undefined;
  let pax: [string, Buffer][] | undefined;
  const split = ustarSplit(name);
  if (split === undefined) {
    if (hasRawBytes(e.path)) (before ??= []).push(gnuLongRecord('L', name));
    else (pax ??= []).push(['path', name]);
  }
  if (link !== undefined && link.length > 100) {
    if (hasRawBytes(e.target ?? e.linkTo ?? '')) (before ??= []).push(gnuLongRecord('K', link));
    else (pax ??= []).push(['linkpath', link]);
  }
  if (size > MAX_OCTAL_11) (pax ??= []).push(['size', Buffer.from(String(size))]);
  if (mtime < 0 || mtime > MAX_OCTAL_11) (pax ??= []).push(['mtime', Buffer.from(String(mtime))]);
  if (uid > MAX_OCTAL_7) (pax ??= []).push(['uid', Buffer.from(String(uid))]);
  if (gid > MAX_OCTAL_7) (pax ??= []).push(['gid', Buffer.from(String(gid))]);
  if (pax !== undefined) {
    const records = Buffer.concat(pax.map(([k, v]) => paxRecord(k, v)));
    (before ??= []).push(block({ name: Buffer.from('PaxHeader'), type: 'x', size: records.length, mode: 0o644, mtime: 0 }), records, padding(records.length));
  }
  return {
    name: split?.name ?? standIn(name),
    prefix: split?.prefix,
    type,
    size,
    mode: e.mode ?? (e.type === 'dir' ? 0o755 : e.type === 'symlink' ? 0o777 : 0o644),
    uid: uid > MAX_OCTAL_7 ? 0 : uid,
    gid: gid > MAX_OCTAL_7 ? 0 : gid,
    mtime: mtime < 0 || mtime > MAX_OCTAL_11 ? 0 : mtime,
    link: link === undefined ? undefined : link.length > 100 ? standIn(link) : link,
    before: before === undefined ? undefined : Buffer.concat(before),
  };
}

const MAX_OCTAL_11 = 0o77777777777;
const MAX_OCTAL_7 = 0o7777777;

function bytesOf(name: string, path: string): Buffer {
  const bytes = encodeName(name);
  if (bytes === undefined) throw new InvalidDumpError(`${JSON.stringify(path)}: a name holding an unpaired surrogate that stands for no byte`);
  return bytes;
}

/** `name` in ustar's name (100 bytes) and prefix (155) fields, split at a '/', or undefined. */
function ustarSplit(name: Buffer): { name: Buffer; prefix?: Buffer } | undefined {
  if (name.length <= 100) return { name };
  // The prefix as long as it may be leaves the shortest name; a trailing '/' (directory) stays in it.
  const i = name.lastIndexOf(0x2f, Math.min(155, name.length - 2));
  if (i <= 0 || name.length - i - 1 > 100) return undefined;
  return { name: name.subarray(i + 1), prefix: name.subarray(0, i) };
}

/** An ASCII name for the ustar field of an entry whose real name is in a record before it. */
function standIn(name: Buffer): Buffer {
  return Buffer.from(name.subarray(0, 90).toString('latin1').replace(/[^\x20-\x7e]/g, '_'), 'latin1');
}

/** One pax record: "<length> <key>=<value>\n", the length counting itself. */
function paxRecord(key: string, value: Buffer): Buffer {
  const rest = Buffer.byteLength(` ${key}=\n`) + value.length;
  let len = rest + String(rest).length;
  if (String(len).length !== String(rest).length) len = rest + String(len).length;
  return Buffer.concat([Buffer.from(`${len} ${key}=`), value, Buffer.from('\n')]);
}

/** A GNU long-name record: a header of type `flag` ('L' name, 'K' link) and the bytes, NUL-ended. */
function gnuLongRecord(flag: 'L' | 'K', bytes: Buffer): Buffer {
  const size = bytes.length + 1;
  const h = block({ name: Buffer.from('././@LongLink'), type: flag, size, mode: 0o644, mtime: 0, gnu: true });
  return Buffer.concat([h, bytes, padding(size - 1)]);
}

interface Block {
  name: Buffer;
  prefix?: Buffer | undefined;
  type: string;
  size: number;
  mode: number;
  uid?: number;
  gid?: number;
  mtime: number;
  link?: Buffer | undefined;
  /** GNU magic ("ustar  \0"), which a long-name record carries. */
  gnu?: boolean;
  /** Records that go before this header: GNU long names, a pax header. */
  before?: Buffer | undefined;
}

/** One 512-byte header block. */
function block(b: Block): Buffer {
  const h = Buffer.alloc(512);
  fillBlock(h, 0, b);
  return h;
}

/** A header block into 512 bytes of `h` at `at`, which are zero. */
function fillBlock(h: Buffer, at: number, b: Block): void {
  const name = Math.min(b.name.length, 100);
  h.set(b.name.length > 100 ? b.name.subarray(0, 100) : b.name, at);
  octal(h, at + 100, 8, b.mode & 0o7777);
  octal(h, at + 108, 8, b.uid ?? 0);
  octal(h, at + 116, 8, b.gid ?? 0);
  if (b.size > MAX_OCTAL_11) {
    // base-256, as GNU tar writes it; the pax size is the portable one
    h[at + 124] = 0x80;
    let v = b.size;
    for (let i = 135; i > 124; i--) {
      h[at + i] = v % 256;
      v = Math.floor(v / 256);
    }
  } else octal(h, at + 124, 12, b.size);
  octal(h, at + 136, 12, b.mtime);
  h[at + 156] = b.type.charCodeAt(0);
  const link = b.link === undefined ? 0 : Math.min(b.link.length, 100);
  if (b.link !== undefined) h.set(link < b.link.length ? b.link.subarray(0, link) : b.link, at + 157);
  h.set(b.gnu ? GNU_MAGIC : USTAR_MAGIC, at + 257);
  const prefix = b.prefix === undefined ? 0 : Math.min(b.prefix.length, 155);
  if (b.prefix !== undefined) h.set(prefix < b.prefix.length ? b.prefix.subarray(0, prefix) : b.prefix, at + 345);
  for (let i = at + 148; i < at + 156; i++) h[i] = 0x20; // the checksum counts its own field as spaces (a loop: fill() is a call into C++)
  // Only these ranges hold anything but zeros.
  let sum = 0;
  for (let i = at, end = at + name; i < end; i++) sum += h[i]!;
  for (let i = at + 100, end = at + 157 + link; i < end; i++) sum += h[i]!;
  for (let i = at + 257, end = at + 265; i < end; i++) sum += h[i]!;
  for (let i = at + 345, end = at + 345 + prefix; i < end; i++) sum += h[i]!;
  octal(h, at + 148, 7, sum);
  h[at + 155] = 0x20;
}

const USTAR_MAGIC = Buffer.from('ustar\x0000', 'latin1');
const GNU_MAGIC = Buffer.from('ustar  \0', 'latin1');

/** A numeric field: `len - 1` octal digits, NUL-ended. */
function octal(h: Buffer, at: number, len: number, value: number): void {
  let v = value;
  let i = at + len - 2;
  if (v <= 0x7fffffff) {
    for (; i >= at; i--) {
      h[i] = 0x30 | (v & 7);
      v >>>= 3;
    }
  } else {
    for (; i >= at; i--) {
      h[i] = 0x30 + (v % 8);
      v = Math.floor(v / 8);
    }
  }
  h[at + len - 1] = 0;
}

/**
 * Reads a tar (or tar.gz) archive from `file`, giving each entry, as a DumpEntry checked by a fresh
 * NamespaceCheck, to `each` with its data (files that are not hard links), then drains what `each`
 * left unread. Throws InvalidDumpError on a truncated or corrupt archive: a bad header checksum, data
 * cut short, a missing end-of-archive marker (two zero blocks: without it a tar cut at an entry's
 * end would pass), or a gzip stream that is cut or fails its CRC/length trailer.
 *
 * Entry types: files (and contiguous files), directories, symlinks and hard links are read; devices
 * and FIFOs are refused, not skipped: a store holds none, and a restore that silently left entries
 * out would not be the archive's namespace. GNU sparse files (type 'S', or pax GNU.sparse.*) are
 * refused too: their data is a map, not the content. Unknown types likewise.
 */
export function readTar(file: string, gzip: boolean, each: EntryCallback | undefined, signal?: AbortSignal, linksOutside = false, entries?: number): Promise<DumpCounters> {
  // The parser is ferry's own (tar-read.ts): tar-stream's extract made a stream per entry.
  return readTarArchive(file, gzip, each, signal, linksOutside, entries);
}
