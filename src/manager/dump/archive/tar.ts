import { createReadStream } from 'node:fs';
import { Transform, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { extract as tarExtract, pack as tarPack, type Header, type Extract } from 'tar-stream';
import { AbortedError, InvalidDumpError, NotSupportedYetError, SourceChangedError } from '../../../shared/errors.js';
import type { DumpCounters, DumpEntry } from '../entry.js';
import { NamespaceCheck } from '../validate.js';
import { decodeName, encodeName, hasRawBytes } from './names.js';
import { archiveError, bridge, coalesce, Consumer, Failure, type ArchiveWriter, type EntryCallback } from './common.js';

/** Largest value of a ustar numeric field of 11 octal digits (sizes: 8 GiB - 1, mtimes to 2242). */
const USTAR_MAX_11 = 0o77777777777;
/** Largest uid/gid in a ustar field of 7 octal digits; tar-stream writes 6 and clamps above. */
const USTAR_MAX_ID = 0o777777;

/** tar-stream's header as it reads and writes it (its types leave out `pax` values and `byteOffset`). */
type PaxHeaders = Partial<Omit<Header, 'pax'>> & { name: string; pax?: Record<string, string> | null; byteOffset?: number };

/**
 * A tar (or tar.gz) writer over tar-stream. What it keeps: every entry type of a dump (files,
 * directories, empty ones too, symlinks, hard links), modes, uid/gid, mtimes (whole seconds, as
 * ustar holds them). Long names and link targets, sizes of 8 GiB and more, large uids and mtimes
 * outside ustar's range go in pax headers; names holding bytes that are not UTF-8 in GNU long-name
 * records.
 */
export function createTarWriter(out: Writable, gzip: boolean): ArchiveWriter {
  const pack = tarPack();
  const check = new NamespaceCheck();
  const failure = new Failure();
  const chain = (gzip ? [pack, coalesce(), createGzip(), out] : [pack, coalesce(), out]) as unknown as [Readable, Writable];
  const done = pipeline(chain).catch((err: unknown) => failure.set(err));

  return {
    async add(e: DumpEntry, data?: Readable): Promise<void> {
      failure.throwIfSet();
      check.add(e);
      const header = tarHeader(e);
      const link = e.target ?? e.linkTo;
      if (hasRawBytes(e.path) || (link !== undefined && hasRawBytes(link))) {
        // tar-stream would write such a name as UTF-8 text in a pax header, changing its bytes; GNU
        // long-name records ('L' for the name, 'K' for the link) carry raw bytes, and GNU tar, bsdtar
        // and tar-stream read them. They go out just before the entry, whose own header then holds
        // an ASCII stand-in; a pax header would override them, so an entry needing one is refused.
        if (header.pax) {
          throw new NotSupportedYetError(
            `${JSON.stringify(e.path)}: a name that is not valid UTF-8 together with ${Object.keys(header.pax).join(', ')} beyond ustar's fields cannot be written to a tar archive by this version of ferry; dump to .json instead`,
          );
        }
        pack.push(gnuLongRecord('L', rawBytes(e.path === '' ? '.' : e.path, e.path) + (e.type === 'dir' ? '/' : '')));
        header.name = standIn(header.name);
        if (link !== undefined) {
          pack.push(gnuLongRecord('K', rawBytes(link, e.path)));
          header.linkname = standIn(link);
        }
      }
      const written = new Promise<void>((resolve, reject) => {
        const callback = (err?: Error | null): void => {
          if (!err) resolve();
          else if (/size mismatch/i.test(err.message)) reject(new SourceChangedError(`${JSON.stringify(e.path)}: its data was not the ${e.size} bytes its entry says (it changed while being dumped?)`));
          else reject(err);
        };
        // A file without data: an empty buffer ends its entry (tar-stream waits for the end otherwise).
        const sink = header.type === 'file' && data === undefined ? pack.entry(header, Buffer.alloc(0), callback) : pack.entry(header, callback);
        sink.on('error', () => undefined); // the callback has it; unheard, streamx would throw it
        if (header.type === 'file' && data !== undefined) {
          data.on('error', (err) => sink.destroy(err));
          data.pipe(sink);
        } else data?.resume();
      });
      await failure.race(written);
    },
    async finish(): Promise<void> {
      failure.throwIfSet();
      pack.finalize();
      await done;
      failure.throwIfSet();
    },
  };
}

/** The bytes of a name (as latin1 text: one char a byte, for concatenation); refused when it stands for none. */
function rawBytes(name: string, path: string): string {
  const bytes = encodeName(name);
  if (bytes === undefined) throw new InvalidDumpError(`${JSON.stringify(path)}: a name holding an unpaired surrogate that stands for no byte`);
  return bytes.toString('latin1');
}

/** An ASCII name short enough for a ustar field, in the header that a GNU long-name record precedes. */
function standIn(name: string): string {
  return name.replace(/[^\x20-\x7e]/g, '_').slice(0, 90);
}

/** A GNU long-name record: a header of type `flag` ('L' name, 'K' link) and the bytes, NUL-ended, in blocks. */
function gnuLongRecord(flag: 'L' | 'K', latin1: string): Buffer {
  const size = Buffer.byteLength(latin1, 'latin1') + 1;
  const block = Buffer.alloc(512 + Math.ceil(size / 512) * 512);
  block.write('././@LongLink', 0, 'latin1');
  block.write('0000644\0', 100, 'latin1');
  block.write('0000000\0', 108, 'latin1');
  block.write('0000000\0', 116, 'latin1');
  block.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  block.write('00000000000\0', 136, 'latin1');
  block.write(flag, 156, 'latin1');
  block.write('ustar  \0', 257, 'latin1'); // GNU magic and version
  block.write('        ', 148, 'latin1');
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += block[i]!;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  block.write(latin1, 512, 'latin1');
  return block;
}

function tarHeader(e: DumpEntry): PaxHeaders {
  const pax: Record<string, string> = {};
  const header: PaxHeaders = {
    name: e.path === '' ? '.' : e.path,
    // The file-type bits make the mode non-zero, so that tar-stream keeps a mode of 0 (it replaces a
    // falsy mode by its default) and masks them off itself.
    mode: (e.type === 'dir' ? 0o040000 : e.type === 'symlink' ? 0o120000 : 0o100000) | (e.mode ?? (e.type === 'dir' ? 0o755 : e.type === 'symlink' ? 0o777 : 0o644)),
    uid: e.uid ?? 0,
    gid: e.gid ?? 0,
    size: 0,
    type: e.type === 'dir' ? 'directory' : e.type === 'symlink' ? 'symlink' : e.linkTo !== undefined ? 'link' : 'file',
  };
  if (e.type === 'symlink') header.linkname = e.target ?? '';
  if (e.linkTo !== undefined) header.linkname = e.linkTo;
  if (header.type === 'file') {
    header.size = e.size;
    if (e.size > USTAR_MAX_11) pax.size = String(e.size);
  }
  const seconds = Math.floor((e.mtime ?? Date.now()) / 1000);
  if (seconds < 0 || seconds > 2 ** 31 - 1) {
    // tar-stream writes `seconds | 0`: out of int32 it would wrap. The pax value is the true one.
    pax.mtime = String(seconds);
    header.mtime = new Date(Math.min(Math.max(seconds, 0), 2 ** 31 - 1) * 1000);
  } else header.mtime = new Date(seconds * 1000);
  if ((header.uid ?? 0) > USTAR_MAX_ID) pax.uid = String(header.uid);
  if ((header.gid ?? 0) > USTAR_MAX_ID) pax.gid = String(header.gid);
  if (Object.keys(pax).length > 0) header.pax = pax;
  return header;
}

/**
 * Reads a tar (or tar.gz) archive from `file`, giving each entry, as a DumpEntry checked by a fresh
 * NamespaceCheck, to `each` with its data (files that are not hard links), then drains what `each`
 * left unread. Throws InvalidDumpError on a truncated or corrupt archive: a bad header checksum, data
 * cut short, a missing end-of-archive marker (two zero blocks: without it a tar cut at an entry's
 * end would pass), or a gzip stream that is cut or fails its CRC/length trailer.
 *
 * Entry types: files (and contiguous files), directories, symlinks and hard links are read; devices
 * and FIFOs are refused, not skipped: a stores holds none, and a restore that silently left entries
 * out would not be the archive's namespace. GNU sparse files (type 'S', or pax GNU.sparse.*) are
 * refused too: their data is a map, not the content. Unknown types likewise.
 */
export async function readTar(file: string, gzip: boolean, each: EntryCallback | undefined, signal?: AbortSignal): Promise<DumpCounters> {
  const format = gzip ? 'tar.gz' : 'tar';
  signal?.throwIfAborted();
  const input = createReadStream(file);
  const gunzip = gzip ? createGunzip() : undefined;
  let total = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      total += chunk.length;
      cb(null, chunk);
    },
  });
  // latin1: a ustar or GNU long name's bytes one char each, decoded below (decodeName).
  const extract = tarExtract({ filenameEncoding: 'latin1', allowUnknownFormat: true } as object) as Extract;
  const stages: (Readable | Writable)[] = gunzip ? [input, gunzip, counter] : [input, counter];
  const stop = (err: unknown): void => {
    for (const s of stages) s.destroy();
    extract.destroy(err as Error);
  };
  for (const s of stages) s.on('error', stop);
  const onAbort = (): void => stop(new AbortedError());
  signal?.addEventListener('abort', onAbort, { once: true });
  const check = new NamespaceCheck();
  const consumer = each && new Consumer(each);
  let end = 0;
  try {
    let prev: Readable | Writable = input;
    for (const s of stages.slice(1)) prev = (prev as Readable).pipe(s as Writable);
    counter.pipe(extract as unknown as Writable);
    for await (const entry of extract) {
      signal?.throwIfAborted();
      const header = entry.header as PaxHeaders;
      const e = toEntry(header, check);
      check.add(e);
      end = (header.byteOffset ?? 0) + Math.ceil((header.size ?? 0) / 512) * 512;
      if (e.type === 'file' && e.linkTo === undefined) {
        if (consumer) await bridge(e, entry, consumer, (n, chunk) => (chunk !== undefined || n === e.size ? undefined : `${n} bytes of data where its header says ${e.size}`), signal);
        else {
          let n = 0;
          for await (const chunk of entry) n += (chunk as Buffer).length;
          if (n !== e.size) throw new InvalidDumpError(`${file}: ${JSON.stringify(e.path)} has ${n} bytes of data where its header says ${e.size}`);
        }
      } else {
        for await (const _ of entry); // a hard link or directory may carry data; it is not used
        if (consumer) await consumer.call(e);
      }
    }
    signal?.throwIfAborted();
    if (total - end < 1024) {
      throw new InvalidDumpError(`${file}: the ${format} archive is truncated (it ends without the end-of-archive marker)`);
    }
    return check.counters;
  } catch (err) {
    stop(err);
    throw archiveError(err, file, format, consumer);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/** A tar header as a DumpEntry (not yet checked). */
function toEntry(h: PaxHeaders, check: NamespaceCheck): DumpEntry {
  const pax = h.pax ?? {};
  // Names from ustar or GNU long-name fields come as latin1 (one char per byte, the raw bytes); pax
  // values come decoded as UTF-8 by tar-stream.
  const name = pax.path !== undefined ? paxName(pax.path, h.name) : decodeName(Buffer.from(h.name, 'latin1'));
  const linkname = h.linkname == null ? undefined : pax.linkpath !== undefined ? paxName(pax.linkpath, h.name) : decodeName(Buffer.from(h.linkname, 'latin1'));
  let path = stripDot(name);
  const type = h.type;
  if (type === 'directory' && path.endsWith('/')) path = path.slice(0, -1);
  const e: DumpEntry = { path, type: 'file', size: 0, mode: (h.mode ?? 0) & 0o7777 };
  e.mtime = pax.mtime !== undefined ? Math.round(Number.parseFloat(pax.mtime) * 1000) : (h.mtime?.getTime() ?? 0);
  e.uid = pax.uid !== undefined ? Number(pax.uid) : (h.uid ?? 0);
  e.gid = pax.gid !== undefined ? Number(pax.gid) : (h.gid ?? 0);
  switch (type) {
    case 'file':
    case 'contiguous-file':
      if (Object.keys(pax).some((k) => k.startsWith('GNU.sparse.'))) throw refused(path, 'a GNU sparse file, which ferry does not restore');
      e.size = h.size ?? 0;
      return e;
    case 'directory':
      e.type = 'dir';
      return e;
    case 'symlink':
      e.type = 'symlink';
      e.target = linkname ?? '';
      return e;
    case 'link': {
      const to = stripDot(linkname ?? '');
      e.linkTo = to;
      e.size = check.sizeOf(to) ?? 0;
      return e;
    }
    case 'character-device':
    case 'block-device':
    case 'fifo':
      throw refused(path, `a ${type.replace('-', ' ')}, which ferry does not restore (stores hold files, directories and symlinks)`);
    default:
      throw refused(path, 'an entry of a type ferry does not know (GNU sparse, multi-volume or volume label?)');
  }
}

function refused(path: string, what: string): InvalidDumpError {
  return new InvalidDumpError(`invalid dump entry ${JSON.stringify(path)}: ${what}; remove it from the archive`);
}

/** A name from a pax header; refused when tar-stream had to replace bytes that were not UTF-8. */
function paxName(value: string, name: string): string {
  if (value.includes('\ufffd')) {
    throw new InvalidDumpError(`a pax header name ${JSON.stringify(value || name)} is not valid UTF-8: its bytes cannot be read exactly, so the archive is refused`);
  }
  return value;
}

/** `./a/b` as `a/b`, `.` and `./` as the root: GNU tar writes `-C dir .` so. */
function stripDot(name: string): string {
  while (name.startsWith('./')) name = name.slice(2);
  return name === '.' ? '' : name;
}
