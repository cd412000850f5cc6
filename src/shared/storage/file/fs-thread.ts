/**
 * A file-system thread (pool.ts): runs the synchronous operations of fs-ops.ts for the main
 * thread, one message per batch. Built as its own entry (dist/fs-thread.js).
 */
import fs from 'node:fs';
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { threadTempName } from '../temp.js';
import { specialKind } from '../tree.js';
import { clearForFileSync, placeFilesSync, readBatchSync, readDirSync, readPackedSync, statNamesSync, type SyncEnv } from './fs-ops.js';

/** What the main thread passes to each of its file-system threads. */
export interface ThreadData {
  /** temp.ts tempNamePrefix() of the main thread. */
  tempNamePrefix: string;
}

const { tempNamePrefix } = workerData as ThreadData;
let seq = 0;
// Threads share the process id: the temporaries of every thread carry the main thread's prefix, so
// that another run sees them as this process's, with the thread's id and a sequence number to keep
// them apart.
const env: SyncEnv = {
  fs,
  specialKind,
  tmpPath: (dst) => dst.slice(0, dst.lastIndexOf('/') + 1) + threadTempName(tempNamePrefix, threadId, seq++),
  clearForFile: clearForFileSync,
};

type Message = { id: number; op: string } & Record<string, unknown>;
type Reply = { result: unknown; transfer?: ArrayBuffer[] };

const ops: Record<string, (m: Message) => Reply> = {
  readDir: (m) => {
    const r = readDirSync(env, m['dir'] as string, m['options'] as Parameters<typeof readDirSync>[2]);
    return 'sorted' in r && r.sorted.packed ? { result: r, transfer: [r.sorted.packed.buffer as ArrayBuffer] } : { result: r };
  },
  statNames: (m) => ({ result: statNamesSync(env, m['dir'] as string, m['keys'] as string[], m['follow'] as boolean) }),
  place: (m) => ({ result: placeFilesSync(env, m['jobs'] as Parameters<typeof placeFilesSync>[1]) }),
  readBatch: (m) => ({ result: readBatchSync(env, m['jobs'] as string[]) }),
  readPacked: (m) => {
    const r = readPackedSync(env, m['jobs'] as string[], m['sizes'] as number[] | undefined);
    return { result: r, transfer: [r.data.buffer as ArrayBuffer] };
  },
};

parentPort!.on('message', (m: Message) => {
  let reply: Reply | undefined;
  let error: { code: string; message: string } | undefined;
  try {
    const op = ops[m.op];
    if (!op) throw new Error(`file-system thread: no operation ${JSON.stringify(m.op)}`);
    reply = op(m);
  } catch (e) {
    const err = e as NodeJS.ErrnoException | null;
    error = { code: err?.code ? String(err.code) : 'EIO', message: String(err?.message ?? e) };
  }
  if (reply) parentPort!.postMessage({ id: m.id, result: reply.result }, reply.transfer ?? []);
  else parentPort!.postMessage({ id: m.id, error });
});
