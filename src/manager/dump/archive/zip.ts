import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { close as fsClose, fstat, open as fsOpen, read as fsRead } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable, Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { crc32, createDeflateRaw, deflateRawSync, inflateRawSync } from 'node:zlib';
import yauzl from 'yauzl';
import { AbortedError, InvalidDumpError, NotSupportedYetError, SourceChangedError } from '../../../shared/errors.js';
import type { DumpCounters, DumpEntry } from '../entry.js';
import { NamespaceCheck } from '../validate.js';
import { archiveError, bridge, coalesce, Consumer, Failure, type ArchiveWriter, type EntryCallback } from './common.js';
import { decodeName, encodeName, hasRawBytes } from './names.js';

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
/** Version made by: high byte 3 = Unix, whose external attributes hold st_mode in the high 16 bits. */
const MADE_BY_UNIX = 3;
/** A symlink's target is its content; longer than this is no symlink a file system makes. */
const MAX_TARGET = 64 * 1024;

/** Files up to this size are compressed in one call; larger ones stream through a deflate stream. */
const WHOLE_MAX = 256 * 1024;
/** From this size a member is written as zip64 (deflate may grow data a little past 4 GiB). */
const ZIP64_FROM = 0xf0000000;
/** Central directory records kept in memory before they go to a temporary file. */
const CD_MEMORY = 4 * 1024 * 1024;
const FLAG_DESCRIPTOR = 0x0008;
const FLAG_UTF8 = 0x0800;

/**
 * A streaming zip writer (local headers, data, data descriptors; zip64 where sizes or counts need
 * it). Not yazl: it finds the next entry to write by scanning all it was given (quadratic: 200,000
 * files did not finish in minutes) and keeps every entry as an object to the end. Here the central
 * directory records go to a temporary file past CD_MEMORY, so memory stays bounded.
 *
 * What it keeps: files, directories (empty ones too), symlinks as Info-ZIP writes them (the Unix
 * mode's S_IFLNK, the target as the content), modes, mtimes (whole seconds, in the Info-ZIP UT
 * field besides the DOS time), names byte for byte (a name that is not UTF-8 goes without the UTF-8
 * flag, as Info-ZIP on Unix writes it). Not uid/gid, not the root's own attributes (a zip has no
 * entry for it). A hard link is written as a copy when its data is given, else refused.
 */
export function createZipWriter(out: Writable): ArchiveWriter {
  const check = new NamespaceCheck(undefined, true);
  const failure = new Failure();
  const output = coalesce();
  const done = pipeline(output, out).catch((err: unknown) => failure.set(err));
  let offset = 0;
  let count = 0;
  let cd: Buffer[] = [];
  let cdMemory = 0;
  let cdSize = 0;
  let spill: { path: string; handle: FileHandle } | undefined;

  const write = async (b: Buffer): Promise<void> => {
    offset += b.length;
    if (!output.write(b)) await failure.race(once(output, 'drain'));
  };
  const addRecord = async (r: Buffer): Promise<void> => {
    cd.push(r);
    cdMemory += r.length;
    cdSize += r.length;
    count++;
    if (cdMemory < CD_MEMORY) return;
    if (spill === undefined) {
      const path = join(tmpdir(), `ferry-zip-cd-${process.pid}-${randomUUID()}`);
      spill = { path, handle: await open(path, 'w+') };
    }
    await spill.handle.write(Buffer.concat(cd, cdMemory));
    cd = [];
    cdMemory = 0;
  };

  return {
    async add(e: DumpEntry, given?: Readable | Buffer): Promise<void> {
      failure.throwIfSet();
      const whole = Buffer.isBuffer(given) ? given : undefined;
      const data = whole === undefined ? (given as Readable | undefined) : Readable.from([whole]);
      check.add(e);
      if (e.path === '') {
        data?.resume();
        return;
      }
      const name = encodeName(e.type === 'dir' ? `${e.path}/` : e.path);
      if (name === undefined || name.length > 0xffff) throw new InvalidDumpError(`${JSON.stringify(e.path)}: a name zip cannot hold (an unpaired surrogate, or longer than 65535 bytes)`);
      const m: Member = {
        name,
        utf8: !hasRawBytes(e.path),
        mode: e.type === 'dir' ? S_IFDIR | (e.mode ?? 0o755) : e.type === 'symlink' ? S_IFLNK | (e.mode ?? 0o777) : S_IFREG | (e.mode ?? 0o644),
        mtime: e.mtime ?? Date.now(),
        offset,
        method: 0,
        crc: 0,
        csize: 0,
        usize: 0,
        descriptor: false,
        zip64: false,
      };
      if (e.type === 'dir' || e.type === 'symlink' || (e.type === 'file' && data === undefined)) {
        data?.resume();
        if (e.type === 'file') {
          if (e.linkTo !== undefined) throw new NotSupportedYetError(`${JSON.stringify(e.path)}: a zip archive holds no hard links; give the linked file's data to write it as a copy`);
          if (e.size !== 0) throw new InvalidDumpError(`${JSON.stringify(e.path)}: a file of ${e.size} bytes without its data`);
        }
        const content = e.type === 'symlink' ? encodeName(e.target ?? '') : Buffer.alloc(0);
        if (content === undefined) throw new InvalidDumpError(`${JSON.stringify(e.path)}: a symlink target holding an unpaired surrogate that stands for no byte`);
        m.crc = crc32(content);
        m.csize = m.usize = content.length;
        await write(localHeader(m));
        if (content.length > 0) await write(content);
      } else if (data !== undefined) {
        m.method = 8;
        if (e.size <= WHOLE_MAX) {
          let raw = whole;
          if (raw === undefined) {
            const chunks: Buffer[] = [];
            for await (const c of data) chunks.push(c as Buffer);
            raw = Buffer.concat(chunks);
          }
          if (raw.length !== e.size) throw changed(e, raw.length);
          const packed = deflateRawSync(raw);
          m.crc = crc32(raw);
          m.usize = raw.length;
          m.csize = packed.length;
          await write(localHeader(m));
          await write(packed);
        } else {
          m.descriptor = true;
          m.zip64 = e.size >= ZIP64_FROM;
          await write(localHeader(m));
          let crc = 0;
          let usize = 0;
          await pipeline(
            data,
            new Transform({
              transform(chunk: Buffer, _enc, cb) {
                crc = crc32(chunk, crc);
                usize += chunk.length;
                cb(null, chunk);
              },
            }),
            createDeflateRaw(),
            async (packed: AsyncIterable<Buffer>) => {
              for await (const c of packed) {
                m.csize += c.length;
                await write(c);
              }
            },
          );
          if (usize !== e.size) throw changed(e, usize);
          m.crc = crc;
          m.usize = usize;
          await write(dataDescriptor(m));
        }
      }
      await addRecord(centralRecord(m));
      failure.throwIfSet();
    },
    async finish(): Promise<void> {
      failure.throwIfSet();
      try {
        const cdOffset = offset;
        if (spill !== undefined) {
          for await (const c of spill.handle.createReadStream({ start: 0, autoClose: false })) await write(c as Buffer);
        }
        for (const r of cd) await write(r);
        await write(endRecords(count, cdSize, cdOffset, offset));
        output.end();
        await failure.race(done);
        failure.throwIfSet();
      } finally {
        if (spill !== undefined) {
          await spill.handle.close().catch(() => undefined);
          await rm(spill.path, { force: true });
        }
      }
    },
  };
}

function changed(e: DumpEntry, n: number): SourceChangedError {
  return new SourceChangedError(`${JSON.stringify(e.path)}: its data was ${n} bytes, not the ${e.size} its entry says (it changed while being dumped?)`);
}

interface Member {
  name: Buffer;
  utf8: boolean;
  mode: number;
  mtime: number;
  offset: number;
  /** 0 stored, 8 deflated. */
  method: number;
  crc: number;
  csize: number;
  usize: number;
  /** CRC and sizes follow the data (bit 3), as they are not known when the header goes out. */
  descriptor: boolean;
  zip64: boolean;
}

/** DOS date and time (local time, as zip tools read them), clamped to 1980-2107. */
function dosTime(ms: number): { time: number; date: number } {
  const d = new Date(ms);
  const year = d.getFullYear();
  if (year < 1980) return { time: 0, date: (1 << 5) | 1 };
  if (year > 2107) return { time: (23 << 11) | (59 << 5) | 29, date: (127 << 9) | (12 << 5) | 31 };
  return {
    time: (d.getHours() << 11) | (d.getMinutes() << 5) | (d.getSeconds() >> 1),
    date: ((year - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate(),
  };
}

/** The Info-ZIP UT field with the modification time (whole seconds, when it fits 32 bits). */
function timestampField(ms: number): Buffer {
  const s = Math.floor(ms / 1000);
  if (s < -(2 ** 31) || s > 2 ** 31 - 1) return Buffer.alloc(0);
  const b = Buffer.alloc(9);
  b.writeUInt16LE(0x5455, 0);
  b.writeUInt16LE(5, 2);
  b.writeUInt8(1, 4);
  b.writeInt32LE(s, 5);
  return b;
}

function flags(m: Member): number {
  return (m.descriptor ? FLAG_DESCRIPTOR : 0) | (m.utf8 ? FLAG_UTF8 : 0);
}

function localHeader(m: Member): Buffer {
  const ut = timestampField(m.mtime);
  const z64 = m.zip64 ? Buffer.alloc(20) : Buffer.alloc(0);
  if (m.zip64) {
    z64.writeUInt16LE(0x0001, 0);
    z64.writeUInt16LE(16, 2); // sizes 0 here: the data descriptor has them
  }
  const h = Buffer.alloc(30);
  const { time, date } = dosTime(m.mtime);
  h.writeUInt32LE(0x04034b50, 0);
  h.writeUInt16LE(m.zip64 ? 45 : 20, 4);
  h.writeUInt16LE(flags(m), 6);
  h.writeUInt16LE(m.method, 8);
  h.writeUInt16LE(time, 10);
  h.writeUInt16LE(date, 12);
  if (!m.descriptor) {
    h.writeUInt32LE(m.crc >>> 0, 14);
    h.writeUInt32LE(m.csize, 18);
    h.writeUInt32LE(m.usize, 22);
  } else if (m.zip64) {
    h.writeUInt32LE(0xffffffff, 18);
    h.writeUInt32LE(0xffffffff, 22);
  }
  h.writeUInt16LE(m.name.length, 26);
  h.writeUInt16LE(ut.length + z64.length, 28);
  return Buffer.concat([h, m.name, z64, ut]);
}

function dataDescriptor(m: Member): Buffer {
  const b = Buffer.alloc(m.zip64 ? 24 : 16);
  b.writeUInt32LE(0x08074b50, 0);
  b.writeUInt32LE(m.crc >>> 0, 4);
  if (m.zip64) {
    b.writeBigUInt64LE(BigInt(m.csize), 8);
    b.writeBigUInt64LE(BigInt(m.usize), 16);
  } else {
    b.writeUInt32LE(m.csize, 8);
    b.writeUInt32LE(m.usize, 12);
  }
  return b;
}

function centralRecord(m: Member): Buffer {
  const big = [m.usize, m.csize, m.offset].map((v) => v >= 0xffffffff);
  const wide = big.filter(Boolean).length;
  const z64 = wide > 0 ? Buffer.alloc(4 + 8 * wide) : Buffer.alloc(0);
  if (wide > 0) {
    z64.writeUInt16LE(0x0001, 0);
    z64.writeUInt16LE(8 * wide, 2);
    let at = 4;
    for (const [i, v] of [m.usize, m.csize, m.offset].entries()) {
      if (!big[i]) continue;
      z64.writeBigUInt64LE(BigInt(v), at);
      at += 8;
    }
  }
  const ut = timestampField(m.mtime);
  const h = Buffer.alloc(46);
  const { time, date } = dosTime(m.mtime);
  const version = m.zip64 || wide > 0 ? 45 : 20;
  h.writeUInt32LE(0x02014b50, 0);
  h.writeUInt16LE((MADE_BY_UNIX << 8) | version, 4);
  h.writeUInt16LE(version, 6);
  h.writeUInt16LE(flags(m), 8);
  h.writeUInt16LE(m.method, 10);
  h.writeUInt16LE(time, 12);
  h.writeUInt16LE(date, 14);
  h.writeUInt32LE(m.crc >>> 0, 16);
  h.writeUInt32LE(big[1] ? 0xffffffff : m.csize, 20);
  h.writeUInt32LE(big[0] ? 0xffffffff : m.usize, 24);
  h.writeUInt16LE(m.name.length, 28);
  h.writeUInt16LE(z64.length + ut.length, 30);
  // comment length, disk, internal attributes: 0
  h.writeUInt32LE((((m.mode & 0xffff) << 16) | ((m.mode & S_IFMT) === S_IFDIR ? 0x10 : 0)) >>> 0, 38);
  h.writeUInt32LE(big[2] ? 0xffffffff : m.offset, 42);
  return Buffer.concat([h, m.name, z64, ut]);
}

/** The end of central directory record, after the zip64 one and its locator when counts or offsets need them. */
function endRecords(count: number, cdSize: number, cdOffset: number, zip64At: number): Buffer {
  const needs64 = count >= 0xffff || cdSize >= 0xffffffff || cdOffset >= 0xffffffff;
  const parts: Buffer[] = [];
  if (needs64) {
    const r = Buffer.alloc(56);
    r.writeUInt32LE(0x06064b50, 0);
    r.writeBigUInt64LE(44n, 4);
    r.writeUInt16LE((MADE_BY_UNIX << 8) | 45, 12);
    r.writeUInt16LE(45, 14);
    r.writeBigUInt64LE(BigInt(count), 24);
    r.writeBigUInt64LE(BigInt(count), 32);
    r.writeBigUInt64LE(BigInt(cdSize), 40);
    r.writeBigUInt64LE(BigInt(cdOffset), 48);
    const l = Buffer.alloc(20);
    l.writeUInt32LE(0x07064b50, 0);
    l.writeBigUInt64LE(BigInt(zip64At), 8);
    l.writeUInt32LE(1, 16);
    parts.push(r, l);
  }
  const e = Buffer.alloc(22);
  e.writeUInt32LE(0x06054b50, 0);
  e.writeUInt16LE(Math.min(count, 0xffff), 8);
  e.writeUInt16LE(Math.min(count, 0xffff), 10);
  e.writeUInt32LE(Math.min(cdSize, 0xffffffff), 12);
  e.writeUInt32LE(Math.min(cdOffset, 0xffffffff), 16);
  parts.push(e);
  return Buffer.concat(parts);
}

/**
 * Reads a zip archive from `file` (central directory first, then each member's data), giving each
 * entry, checked by a fresh NamespaceCheck, to `each` with its data. Every byte is checked: yauzl
 * checks sizes; the CRC-32 of each member's data is computed here (yauzl does not) and a mismatch
 * fails the member's stream before its end. A truncated file has no end of central directory.
 *
 * Names: a zip's name bytes are taken as UTF-8 whether or not the UTF-8 flag is set, with bytes that
 * are not UTF-8 kept as escapes (entry.ts): Unix zip tools write the bytes of the file system's names,
 * which round-trip so; a Windows zip's CP437 names come out as escaped bytes, not as mangled text.
 * Entries whose Unix mode is a device or FIFO, and encrypted entries, are refused.
 */
export async function readZip(file: string, each: EntryCallback | undefined, signal?: AbortSignal, linksOutside = false): Promise<DumpCounters> {
  signal?.throwIfAborted();
  let zip: yauzl.ZipFile | undefined;
  let stream: Readable | undefined;
  const consumer = each && new Consumer(each);
  const onAbort = (): void => zip?.close();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const reader = await WindowReader.open(file);
    reader.on('error', () => undefined); // a failed close, said by yauzl as an event: nothing to do then
    zip = await new Promise<yauzl.ZipFile>((resolve, reject) =>
      yauzl.fromRandomAccessReader(reader, reader.size, { lazyEntries: true, autoClose: false, decodeStrings: false, validateEntrySizes: true }, (err, z) => {
        if (err) {
          reader.close(() => undefined);
          reject(err);
        } else resolve(z);
      }),
    );
    zip.on('error', () => undefined); // errors come through nextEntry's listener and the callbacks
    const check = new NamespaceCheck(undefined, linksOutside);
    for (;;) {
      const entry = await nextEntry(zip);
      if (signal?.aborted) throw new AbortedError();
      if (entry === null) break;
      const e = toEntry(entry);
      if (e.type === 'symlink') e.target = decodeName(await readAll(zip, entry, MAX_TARGET));
      check.add(e);
      if (e.type !== 'file') {
        if (consumer) await consumer.call(e);
        continue;
      }
      stream = await memberData(zip, entry);
      let crc = 0;
      const verify = (n: number, chunk?: Buffer): string | undefined => {
        if (chunk !== undefined) {
          crc = crc32(chunk, crc);
          return undefined;
        }
        if (crc >>> 0 !== entry.crc32 >>> 0) return `its data fails its CRC-32 check (${(crc >>> 0).toString(16)} where the archive says ${(entry.crc32 >>> 0).toString(16)})`;
        return n === e.size ? undefined : `${n} bytes of data where the archive says ${e.size}`;
      };
      if (consumer) await bridge(e, stream, consumer, verify, signal);
      else {
        let n = 0;
        for await (const chunk of stream) {
          signal?.throwIfAborted();
          n += (chunk as Buffer).length;
          verify(-1, chunk as Buffer);
        }
        const why = verify(n);
        if (why !== undefined) throw new InvalidDumpError(`${JSON.stringify(e.path)}: ${why}`);
      }
    }
    return check.counters;
  } catch (err) {
    throw archiveError(signal?.aborted ? new AbortedError() : err, file, 'zip', consumer);
  } finally {
    signal?.removeEventListener('abort', onAbort);
    stream?.destroy();
    zip?.close();
  }
}

/** Bytes a window of WindowReader holds. */
const WINDOW = 256 * 1024;

/**
 * The zip file for yauzl, read through a few cached windows: yauzl reads each central directory
 * record, its name and each local header with a read of its own (three file reads an entry: a
 * 200,000-file zip took 50 s to scan). The central directory and the members' data lie apart, so a
 * few windows are kept, the least recently used one replaced.
 */
class WindowReader extends yauzl.RandomAccessReader {
  private windows: { start: number; buf: Buffer }[] = [];

  private constructor(
    private readonly fd: number,
    readonly size: number,
  ) {
    super();
  }

  static async open(file: string): Promise<WindowReader> {
    // yauzl's reader API is callback-based, so is this descriptor's use.
    const fd = await new Promise<number>((resolve, reject) => fsOpen(file, 'r', (err, fd) => (err ? reject(err) : resolve(fd))));
    try {
      const size = await new Promise<number>((resolve, reject) => fstat(fd, (err, st) => (err ? reject(err) : resolve(st.size))));
      return new WindowReader(fd, size);
    } catch (err) {
      fsClose(fd, () => undefined);
      throw err;
    }
  }

  override read(buffer: Buffer, offset: number, length: number, position: number, callback: (err: Error | null, bytesRead?: number) => void): void {
    this.slice(position, length).then(
      (s) => {
        s.copy(buffer, offset);
        callback(null, s.length);
      },
      (err: Error) => callback(err),
    );
  }

  override _readStreamForRange(start: number, end: number): Readable {
    if (end - start > WINDOW) {
      // Not fs.createReadStream on the descriptor: a destroy() of it closes the descriptor,
      // which this reader closes itself (a second close could hit a descriptor reused since).
      const fd = this.fd;
      let at = start;
      return new Readable({
        read(): void {
          const n = Math.min(WINDOW, end - at);
          if (n <= 0) {
            this.push(null);
            return;
          }
          const buf = Buffer.allocUnsafe(n);
          fsRead(fd, buf, 0, n, at, (err, got) => {
            if (err) this.destroy(err);
            else if (got === 0) this.destroy(new Error('unexpected end of file'));
            else {
              at += got;
              this.push(buf.subarray(0, got));
            }
          });
        },
      });
    }
    const out = new PassThrough();
    this.slice(start, end - start).then(
      (s) => out.end(s),
      (err: Error) => out.destroy(err),
    );
    return out;
  }

  override close(callback: (err: Error | null) => void): void {
    fsClose(this.fd, (err) => callback(err));
  }

  /** Up to `length` bytes from `position` (fewer only at the end of the file). */
  private async slice(position: number, length: number): Promise<Buffer> {
    for (let i = 0; i < this.windows.length; i++) {
      const w = this.windows[i]!;
      if (position >= w.start && position + length <= w.start + w.buf.length) {
        if (i > 0) this.windows.unshift(...this.windows.splice(i, 1));
        return w.buf.subarray(position - w.start, position - w.start + length);
      }
    }
    const want = Math.max(0, Math.min(Math.max(WINDOW, length), this.size - position));
    const buf = Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      const n = await new Promise<number>((resolve, reject) => fsRead(this.fd, buf, got, want - got, position + got, (err, n) => (err ? reject(err) : resolve(n))));
      if (n === 0) break;
      got += n;
    }
    this.windows.unshift({ start: position, buf: buf.subarray(0, got) });
    if (this.windows.length > 4) this.windows.pop();
    return buf.subarray(0, Math.min(got, length));
  }
}

/** A central directory record as a DumpEntry (not yet checked; a symlink's target still to read). */
function toEntry(z: yauzl.Entry): DumpEntry {
  let path = decodeName(z.fileName as unknown as Buffer);
  if (z.isEncrypted()) throw new InvalidDumpError(`${JSON.stringify(path)}: an encrypted zip entry, which ferry does not read`);
  const unix = z.versionMadeBy >>> 8 === MADE_BY_UNIX ? z.externalFileAttributes >>> 16 : 0;
  const fmt = unix & S_IFMT;
  const e: DumpEntry = { path, type: 'file', size: 0, mtime: z.getLastModDate().getTime() };
  if (unix !== 0) e.mode = unix & 0o7777;
  if (fmt === S_IFLNK) e.type = 'symlink';
  else if (fmt === S_IFDIR || (fmt === 0 && path.endsWith('/'))) e.type = 'dir';
  else if (fmt !== S_IFREG && fmt !== 0) throw new InvalidDumpError(`${JSON.stringify(path)}: a special file (mode ${unix.toString(8)}), which ferry does not restore; remove it from the archive`);
  if (e.type === 'dir' && path.endsWith('/')) path = path.slice(0, -1);
  e.path = path;
  if (e.type === 'file') e.size = z.uncompressedSize;
  return e;
}

function nextEntry(zip: yauzl.ZipFile): Promise<yauzl.Entry | null> {
  return new Promise((resolve, reject) => {
    const off = (): void => {
      zip.off('entry', onEntry);
      zip.off('end', onEnd);
      zip.off('error', onError);
    };
    const onEntry = (entry: yauzl.Entry): void => (off(), resolve(entry));
    const onEnd = (): void => (off(), resolve(null));
    const onError = (err: Error): void => (off(), reject(err));
    zip.on('entry', onEntry);
    zip.on('end', onEnd);
    zip.on('error', onError);
    zip.readEntry();
  });
}

/**
 * A member's uncompressed data. A small deflated member is inflated in one call: yauzl makes a
 * zlib stream for each member, which cost more than the bytes in a zip of many small files. The
 * output is capped at the size the archive declares (plus one byte, for the length check to fail).
 */
async function memberData(zip: yauzl.ZipFile, entry: yauzl.Entry): Promise<Readable> {
  if (entry.compressionMethod !== 8 || entry.compressedSize > WINDOW || entry.uncompressedSize > 4 * WINDOW) return openData(zip, entry);
  const raw = await new Promise<Readable>((resolve, reject) =>
    zip.openReadStream(entry, { decompress: false }, (err, stream) => (err ? reject(err) : resolve(stream))),
  );
  const chunks: Buffer[] = [];
  for await (const c of raw) chunks.push(c as Buffer);
  return Readable.from([inflateRawSync(Buffer.concat(chunks), { maxOutputLength: entry.uncompressedSize + 1 })]);
}

function openData(zip: yauzl.ZipFile, entry: yauzl.Entry): Promise<Readable> {
  return new Promise((resolve, reject) => zip.openReadStream(entry, (err, stream) => (err ? reject(err) : resolve(stream))));
}

async function readAll(zip: yauzl.ZipFile, entry: yauzl.Entry, max: number): Promise<Buffer> {
  const name = JSON.stringify(decodeName(entry.fileName as unknown as Buffer));
  if (entry.uncompressedSize > max) throw new InvalidDumpError(`${name}: a symlink whose target is ${entry.uncompressedSize} bytes long`);
  const chunks: Buffer[] = [];
  let crc = 0;
  for await (const chunk of await openData(zip, entry)) {
    chunks.push(chunk as Buffer);
    crc = crc32(chunk as Buffer, crc);
  }
  if (crc >>> 0 !== entry.crc32 >>> 0) throw new InvalidDumpError(`${name}: the symlink's target fails its CRC-32 check`);
  return Buffer.concat(chunks);
}
