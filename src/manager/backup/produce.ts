import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import type { ObjectStore } from '../../shared/storage/types.js';
import { emptyCounters } from '../dump/entry.js';
import type { DumpOutcome, ProduceDump } from './schedule.js';

type WriteDump = (
  source: ObjectStore,
  out: Writable,
  options: { format: 'json.gz'; setting: Record<string, unknown>; signal?: AbortSignal },
) => Promise<DumpOutcome>;

/** `--backup-meta`'s dump of SRC: `ferry dump`'s own writer, as `.json.gz`. */
export function dumpProducer(source: ObjectStore, setting: Record<string, unknown>): ProduceDump {
  return async (out, signal) => (await loadWriteDump())(source, out, { format: 'json.gz', setting, signal });
}

// ---------------------------------------------------------------------------------------------
// TEMPORARY until src/manager/dump/dump.ts lands: replace everything below with
//   async function loadWriteDump(): Promise<WriteDump> { return (await import('../dump/dump.js')).writeDump; }
// (a literal specifier, so that the build bundles it). Until then the specifier is a variable,
// which tsc and esbuild leave alone, and a missing module falls back to a minimal document.
async function loadWriteDump(): Promise<WriteDump> {
  const where = '../dump/dump.js';
  try {
    const m = (await import(where)) as { writeDump?: WriteDump };
    if (typeof m.writeDump === 'function') return m.writeDump;
  } catch {
    // not there yet
  }
  return minimalWriteDump;
}

/** A minimal valid `ferry-dump/1` document from a listing of SRC, gzip-compressed, streamed. */
const minimalWriteDump: WriteDump = async (source, out, options) => {
  const counters = emptyCounters();
  let failed = 0;
  async function* lines(): AsyncGenerator<string> {
    yield `{"format":"ferry-dump/1","setting":${JSON.stringify(options.setting)},"entries":[\n`;
    let first = true;
    for await (const page of source.list(options.signal ? { signal: options.signal } : {})) {
      for (const e of page) {
        if (e.error !== undefined || e.special !== undefined) {
          failed++;
          continue;
        }
        const type = e.isDir ? 'dir' : e.isSymlink ? 'symlink' : 'file';
        if (type === 'file') {
          counters.files++;
          counters.bytes += e.size;
        } else if (type === 'dir') counters.dirs++;
        else counters.symlinks++;
        const entry = { path: e.key.replace(/\/$/, ''), type, size: type === 'file' ? e.size : 0, mtime: e.mtime, ...(e.mode === undefined ? {} : { mode: e.mode }), ...(e.target === undefined ? {} : { target: e.target }) };
        yield (first ? '' : ',\n') + JSON.stringify(entry);
        first = false;
      }
    }
    yield `\n],"counters":${JSON.stringify(counters)}}\n`;
  }
  await pipeline(Readable.from(lines()), createGzip(), out, options.signal ? { signal: options.signal } : {});
  return { counters, failed };
};
