import { crc32 } from 'node:zlib';
import { finished, pipeline } from 'node:stream/promises';
import type { Readable, Writable } from 'node:stream';
import yauzl from 'yauzl';
import yazl from 'yazl';
import { AbortedError, InvalidDumpError, NotSupportedYetError } from '../../../shared/errors.js';
import type { DumpCounters, DumpEntry } from '../entry.js';
import { NamespaceCheck } from '../validate.js';
import { archiveError, bridge, Consumer, Failure, type ArchiveWriter, type EntryCallback } from './common.js';
import { decodeName, encodeName, hasRawBytes } from './names.js';

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
/** Version made by: high byte 3 = Unix, whose external attributes hold st_mode in the high 16 bits. */
const MADE_BY_UNIX = 3;
/** A symlink's target is its content; longer than this is no symlink a file system makes. */
const MAX_TARGET = 64 * 1024;

/**
 * A zip writer over yazl, streaming (data descriptors; zip64 where sizes need it). What it keeps:
 * files, directories (empty ones too), symlinks as Info-ZIP writes them (the Unix mode's S_IFLNK,
 * the target as the content), modes, mtimes (whole seconds, in the Info-ZIP UT field). Not uid/gid
 * (yazl writes no Unix owner field), not the root's own attributes (a zip has no entry for it).
 * Refused: names that are not valid UTF-8 (yazl writes every name as UTF-8 text), names holding '\'
 * (yazl turns it into '/'), and hard links without their data (a zip has no hard links).
 */
export function createZipWriter(out: Writable): ArchiveWriter {
  const zip = new yazl.ZipFile();
  const check = new NamespaceCheck();
  const failure = new Failure();
  zip.on('error', (err: unknown) => failure.set(err));
  const done = pipeline(zip.outputStream, out).catch((err: unknown) => failure.set(err));

  return {
    async add(e: DumpEntry, data?: Readable): Promise<void> {
      failure.throwIfSet();
      if (hasRawBytes(e.path)) {
        throw new NotSupportedYetError(`${JSON.stringify(e.path)}: a name that is not valid UTF-8 cannot be written to a zip archive by this version of ferry (its bytes would be changed); dump to .json instead`);
      }
      if (e.path.includes('\\')) {
        throw new NotSupportedYetError(`${JSON.stringify(e.path)}: a name holding '\\' cannot be written to a zip archive (zip tools read it as '/'); dump to .tar or .json instead`);
      }
      check.add(e);
      if (e.path === '') {
        data?.resume();
        return;
      }
      const mtime = e.mtime === undefined ? undefined : new Date(e.mtime);
      const base = mtime === undefined ? {} : { mtime };
      if (e.type === 'dir') {
        zip.addEmptyDirectory(e.path, { ...base, mode: S_IFDIR | (e.mode ?? 0o755) });
        data?.resume();
      } else if (e.type === 'symlink') {
        const target = encodeName(e.target ?? '');
        if (target === undefined) throw new InvalidDumpError(`${JSON.stringify(e.path)}: a symlink target holding an unpaired surrogate that stands for no byte`);
        zip.addBuffer(target, e.path, { ...base, mode: S_IFLNK | (e.mode ?? 0o777), compress: false });
        data?.resume();
      } else if (data === undefined) {
        if (e.linkTo !== undefined) throw new NotSupportedYetError(`${JSON.stringify(e.path)}: a zip archive holds no hard links; give the linked file's data to write it as a copy`);
        if (e.size !== 0) throw new InvalidDumpError(`${JSON.stringify(e.path)}: a file of ${e.size} bytes without its data`);
        zip.addBuffer(Buffer.alloc(0), e.path, { ...base, mode: S_IFREG | (e.mode ?? 0o644) });
      } else {
        const consumed = finished(data);
        zip.addReadStream(data, e.path, { ...base, mode: S_IFREG | (e.mode ?? 0o644), size: e.size, compress: true });
        data.on('error', (err) => failure.set(err));
        await failure.race(consumed);
      }
      failure.throwIfSet();
    },
    async finish(): Promise<void> {
      failure.throwIfSet();
      zip.end();
      await failure.race(done);
      failure.throwIfSet();
    },
  };
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
export async function readZip(file: string, each: EntryCallback | undefined, signal?: AbortSignal): Promise<DumpCounters> {
  signal?.throwIfAborted();
  let zip: yauzl.ZipFile | undefined;
  let stream: Readable | undefined;
  const consumer = each && new Consumer(each);
  const onAbort = (): void => zip?.close();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    zip = await new Promise<yauzl.ZipFile>((resolve, reject) =>
      yauzl.open(file, { lazyEntries: true, autoClose: false, decodeStrings: false, validateEntrySizes: true }, (err, z) => (err ? reject(err) : resolve(z))),
    );
    const check = new NamespaceCheck();
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
      stream = await openData(zip, entry);
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
