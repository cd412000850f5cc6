import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { InvalidDumpError, SourceChangedError } from '../../../shared/errors.js';
import type { DumpCounters, DumpEntry } from '../entry.js';
import { NamespaceCheck } from '../validate.js';
import { encodeName, hasRawBytes } from './names.js';
import { coalesce, Failure, type ArchiveWriter, type EntryCallback } from './common.js';
import { readTarArchive } from './tar-read.js';

/** Files up to this size are gathered and written in one piece with their header. */
const WHOLE_MAX = 64 * 1024;
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
 * name it cannot put in a ustar field as UTF-8 text, changing bytes that are not UTF-8.
 */
export function createTarWriter(out: Writable, gzip: boolean): ArchiveWriter {
  // A dump writes the links a tree holds, wherever they point; load decides what it restores.
  const check = new NamespaceCheck(undefined, true);
  const failure = new Failure();
  const output = coalesce();
  const chain = (gzip ? [output, createGzip(), out] : [output, out]) as [Readable, Writable];
  const done = pipeline(chain).catch((err: unknown) => failure.set(err));
  const write = async (b: Buffer): Promise<void> => {
    if (!output.write(b)) await failure.race(once(output, 'drain'));
  };

  return {
    async add(e: DumpEntry, data?: Readable): Promise<void> {
      failure.throwIfSet();
      check.add(e);
      const header = tarHeaders(e);
      const isData = e.type === 'file' && e.linkTo === undefined;
      if (!isData || data === undefined) {
        data?.resume();
        if (isData && e.size !== 0) throw new InvalidDumpError(`${JSON.stringify(e.path)}: a file of ${e.size} bytes without its data`);
        await write(header);
        return;
      }
      if (e.size <= WHOLE_MAX) {
        const chunks: Buffer[] = [header];
        let n = 0;
        for await (const c of data) {
          chunks.push(c as Buffer);
          n += (c as Buffer).length;
          if (n > e.size) break;
        }
        if (n !== e.size) throw changed(e, n);
        chunks.push(padding(n));
        await write(Buffer.concat(chunks));
        return;
      }
      await write(header);
      let n = 0;
      for await (const c of data) {
        n += (c as Buffer).length;
        if (n > e.size) break;
        await write(c as Buffer);
      }
      if (n !== e.size) {
        // The archive already holds part of this entry: it cannot go on.
        const err = changed(e, n);
        failure.set(err);
        throw err;
      }
      await write(padding(n));
    },
    async finish(): Promise<void> {
      failure.throwIfSet();
      await write(ZEROS); // the end-of-archive marker: two zero blocks
      output.end();
      await failure.race(done);
      failure.throwIfSet();
    },
  };
}

function changed(e: DumpEntry, n: number): SourceChangedError {
  return new SourceChangedError(`${JSON.stringify(e.path)}: its data was ${n > e.size ? 'more' : `${n} bytes`}, not the ${e.size} bytes its entry says (it changed while being dumped?)`);
}

function padding(n: number): Buffer {
  return ZEROS.subarray(0, (512 - (n % 512)) % 512);
}

/** The header blocks of one entry: a GNU long-name or pax record when needed, then the ustar header. */
function tarHeaders(e: DumpEntry): Buffer {
  const type = e.type === 'dir' ? '5' : e.type === 'symlink' ? '2' : e.linkTo !== undefined ? '1' : '0';
  const name = bytesOf(e.path === '' ? './' : e.type === 'dir' ? `${e.path}/` : e.path, e.path);
  const link = e.type === 'symlink' ? bytesOf(e.target ?? '', e.path) : e.linkTo !== undefined ? bytesOf(e.linkTo, e.path) : undefined;
  const size = type === '0' ? e.size : 0;
  const mtime = Math.floor((e.mtime ?? Date.now()) / 1000);
  const uid = e.uid ?? 0;
  const gid = e.gid ?? 0;

  const before: Buffer[] = [];
  const pax: [string, Buffer][] = [];
  const split = ustarSplit(name);
  if (split === undefined) {
    if (hasRawBytes(e.path)) before.push(gnuLongRecord('L', name));
    else pax.push(['path', name]);
  }
  if (link !== undefined && link.length > 100) {
    if (hasRawBytes(e.target ?? e.linkTo ?? '')) before.push(gnuLongRecord('K', link));
    else pax.push(['linkpath', link]);
  }
  if (size > MAX_OCTAL_11) pax.push(['size', Buffer.from(String(size))]);
  if (mtime < 0 || mtime > MAX_OCTAL_11) pax.push(['mtime', Buffer.from(String(mtime))]);
  if (uid > MAX_OCTAL_7) pax.push(['uid', Buffer.from(String(uid))]);
  if (gid > MAX_OCTAL_7) pax.push(['gid', Buffer.from(String(gid))]);
  if (pax.length > 0) {
    const records = Buffer.concat(pax.map(([k, v]) => paxRecord(k, v)));
    before.push(block({ name: Buffer.from('PaxHeader'), type: 'x', size: records.length, mode: 0o644, mtime: 0 }), records, padding(records.length));
  }
  const h = block({
    name: split?.name ?? standIn(name),
    prefix: split?.prefix,
    type,
    size,
    mode: e.mode ?? (e.type === 'dir' ? 0o755 : e.type === 'symlink' ? 0o777 : 0o644),
    uid: uid > MAX_OCTAL_7 ? 0 : uid,
    gid: gid > MAX_OCTAL_7 ? 0 : gid,
    mtime: mtime < 0 || mtime > MAX_OCTAL_11 ? 0 : mtime,
    link: link === undefined ? undefined : link.length > 100 ? standIn(link) : link,
  });
  return before.length === 0 ? h : Buffer.concat([...before, h]);
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
}

/** One 512-byte header block. */
function block(b: Block): Buffer {
  const h = Buffer.alloc(512);
  b.name.copy(h, 0, 0, 100);
  octal(h, 100, 8, b.mode & 0o7777);
  octal(h, 108, 8, b.uid ?? 0);
  octal(h, 116, 8, b.gid ?? 0);
  if (b.size > MAX_OCTAL_11) {
    // base-256, as GNU tar writes it; the pax size is the portable one
    h[124] = 0x80;
    let v = b.size;
    for (let i = 135; i > 124; i--) {
      h[i] = v % 256;
      v = Math.floor(v / 256);
    }
  } else octal(h, 124, 12, b.size);
  octal(h, 136, 12, b.mtime);
  h.write(b.type, 156, 'latin1');
  b.link?.copy(h, 157, 0, 100);
  if (b.gnu) h.write('ustar  \0', 257, 'latin1');
  else h.write('ustar\x0000', 257, 'latin1');
  b.prefix?.copy(h, 345, 0, 155);
  h.write('        ', 148, 'latin1');
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += h[i]!;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return h;
}

/** A numeric field: octal digits, NUL-ended. */
function octal(h: Buffer, at: number, len: number, value: number): void {
  h.write(`${value.toString(8).padStart(len - 1, '0')}\0`, at, 'latin1');
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
export function readTar(file: string, gzip: boolean, each: EntryCallback | undefined, signal?: AbortSignal, linksOutside = false): Promise<DumpCounters> {
  // The parser is ferry's own (tar-read.ts): tar-stream's extract made a stream per entry.
  return readTarArchive(file, gzip, each, signal, linksOutside);
}
