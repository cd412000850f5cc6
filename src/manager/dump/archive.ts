/**
 * Archives that carry a dump's data: tar, tar.gz and zip (archive/tar.ts, archive/zip.ts). `ferry
 * load` reads an archive twice: scanArchive first (every header and every byte checked, every entry
 * through a NamespaceCheck, nothing written), then extractArchive to restore.
 */
import type { Writable } from 'node:stream';
import type { DumpCounters } from './entry.js';
import type { ArchiveFormat, ArchiveWriter, EntryCallback } from './archive/common.js';
import { createTarWriter, readTar } from './archive/tar.js';
import { createZipWriter, readZip } from './archive/zip.js';

export type { ArchiveFormat, ArchiveWriter } from './archive/common.js';

export function createArchiveWriter(format: ArchiveFormat, out: Writable): ArchiveWriter {
  return format === 'zip' ? createZipWriter(out) : createTarWriter(out, format === 'tar.gz');
}

/**
 * Pass 1: reads every header and every byte (sizes, CRCs, the gzip trailer, truncation), each entry
 * through a NamespaceCheck; throws InvalidDumpError naming the file and what is wrong; returns the
 * counters of what the archive holds.
 */
export function scanArchive(format: ArchiveFormat, file: string, signal?: AbortSignal, options: { linksOutside?: boolean } = {}): Promise<DumpCounters> {
  const outside = options.linksOutside ?? false;
  return format === 'zip' ? readZip(file, undefined, signal, outside) : readTar(file, format === 'tar.gz', undefined, signal, outside);
}

/**
 * Pass 2: the entries in archive order, each checked again (the file may have changed since the
 * scan), a file's data (not a hard link's: `linkTo` names the earlier file with its content) as a
 * stream that `each` consumes before the next entry (or whole, as a Buffer, when the reader had it
 * at hand); what it leaves unread is skipped. A data stream that fails its check (CRC, length)
 * errors before it ends. `entries`: how many the scan counted (the check is sized for them).
 */
export async function extractArchive(format: ArchiveFormat, file: string, each: EntryCallback, signal?: AbortSignal, options: { linksOutside?: boolean; entries?: number } = {}): Promise<void> {
  const outside = options.linksOutside ?? false;
  if (format === 'zip') await readZip(file, each, signal, outside);
  else await readTar(file, format === 'tar.gz', each, signal, outside, options.entries);
}
