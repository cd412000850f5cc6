import { createHash } from 'node:crypto';
import { FerryError } from '../../shared/errors.js';
import type { JobSpec } from '../../shared/job.js';
import { redactAddress } from '../../shared/storage/address.js';
import type { ObjectStore } from '../../shared/storage/types.js';
import type { KeptUpload } from './ledger.js';
import type { Logger, ResumeState } from './run.js';

/** Where checkpoints live, under the destination's root (ferry's reserved directory, never listed by a sync). */
export const CHECKPOINT_PREFIX = '.ferry/checkpoint-';

/** Bytes of a checkpoint file read at most: anything larger is not one of ours (10,000 parts' ETags take under 1 MiB). */
const MAX_BYTES = 64 << 20;

/**
 * What a run writes to resume from (`--enable-checkpoint`). Keys are planned and closed in UTF-8
 * order, so one key says it all: every key before `resumeFrom` was done — copied, skipped, deleted
 * — and a rerun lists from it, leaving finished prefixes unread. Tasks out, failed, withdrawn at a
 * stop, and directories whose attributes were not set yet all hold it back.
 */
export interface Checkpoint {
  v: 1;
  kind: 'ferry-checkpoint';
  /** The hash of the run's arguments this checkpoint is for. */
  id: string;
  /** For people reading the file (secrets removed). */
  src: string;
  dst: string;
  writtenAt: string;
  /** The first key not known to be done; absent: nothing was done yet. */
  resumeFrom?: string;
  /**
   * Multipart uploads of split copies left open, with the parts already stored: a resumed run
   * uploads only the missing parts (or aborts an upload it no longer needs).
   */
  uploads?: KeptUpload[];
  /** What the run that wrote it had done, for the log. */
  copied: number;
  copiedBytes: number;
}

/**
 * The arguments a checkpoint belongs to: addresses, decision and filter options. How fast a run
 * goes (threads, listing parallelism, bandwidth) and when it started do not change what is done, so
 * a rerun with other such values resumes all the same.
 */
export function checkpointId(spec: JobSpec): string {
  const { threads: _t, listThreads: _lt, listDepth: _ld, listCutoff: _lc, bwlimit: _bw, maxFailure: _mf, ...what } = spec.options;
  const canonical = JSON.stringify({ src: spec.src, dst: spec.dst, options: sorted(what), filter: spec.filter, noHttps: spec.noHttps });
  return createHash('sha256').update(canonical).digest('hex').slice(0, 16);
}

function sorted(o: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** Reads, writes and removes one run's checkpoint on its destination. Writes never overlap. */
export class Checkpointer {
  readonly id: string;
  readonly key: string;
  #writing: Promise<void> = Promise.resolve();

  constructor(
    readonly dst: ObjectStore,
    readonly spec: JobSpec,
    readonly log: Logger,
  ) {
    this.id = checkpointId(spec);
    this.key = CHECKPOINT_PREFIX + this.id;
  }

  /** This run's checkpoint, if there is one; checkpoints of other arguments are named and ignored. */
  async load(): Promise<Checkpoint | undefined> {
    const others: string[] = [];
    try {
      for await (const page of this.dst.list({ prefix: CHECKPOINT_PREFIX })) for (const e of page) if (e.key !== this.key && !e.isDir) others.push(e.key);
    } catch (err) {
      if (!(err instanceof FerryError && err.retry === 'notFound')) throw err;
    }
    if (others.length > 0) this.log.warn(`ignoring ${others.length === 1 ? 'a checkpoint' : `${others.length} checkpoints`} of a run with other arguments (${others.join(', ')}): they resume only that run`);
    let text: string;
    try {
      const chunks: Buffer[] = [];
      let n = 0;
      for await (const c of await this.dst.get(this.key)) {
        n += (c as Buffer).length;
        if (n > MAX_BYTES) throw new Error('too large');
        chunks.push(c as Buffer);
      }
      text = Buffer.concat(chunks).toString('utf8');
    } catch (err) {
      if (err instanceof FerryError && err.retry === 'notFound') return undefined;
      this.log.warn(`cannot read the checkpoint ${this.key} (${(err as Error).message}): starting from the beginning`);
      return undefined;
    }
    const c = parse(text);
    if (!c || c.id !== this.id) {
      this.log.warn(`${this.key} is not a checkpoint of this run: starting from the beginning`);
      return undefined;
    }
    return c;
  }

  /** Write the state now (after any write in progress); a failure is said, never thrown. */
  save(state: ResumeState, done: { copied: number; copiedBytes: number }): Promise<void> {
    const { resumeFrom, uploads } = state;
    const c: Checkpoint = {
      v: 1,
      kind: 'ferry-checkpoint',
      id: this.id,
      src: redactAddress(this.spec.src),
      dst: redactAddress(this.spec.dst),
      writtenAt: new Date().toISOString(),
      ...(resumeFrom !== undefined ? { resumeFrom } : {}),
      ...(uploads.length > 0 ? { uploads } : {}),
      copied: done.copied,
      copiedBytes: done.copiedBytes,
    };
    const body = Buffer.from(JSON.stringify(c) + '\n');
    // A store writes a whole object or nothing (file stores through a temporary name): a reader never sees half a checkpoint.
    this.#writing = this.#writing.then(() =>
      this.dst.put(this.key, body, { size: body.length }).catch((err: unknown) => this.log.warn(`cannot write the checkpoint ${this.key}: ${(err as Error).message}`)),
    );
    return this.#writing;
  }

  async remove(): Promise<void> {
    await this.#writing;
    await this.dst.delete(this.key).catch((err: unknown) => {
      if (!(err instanceof FerryError && err.retry === 'notFound')) this.log.warn(`cannot remove the checkpoint ${this.key}: ${(err as Error).message}`);
    });
  }
}

function parse(text: string): Checkpoint | undefined {
  try {
    const c = JSON.parse(text) as Partial<Checkpoint>;
    if (c.v !== 1 || c.kind !== 'ferry-checkpoint' || typeof c.id !== 'string') return undefined;
    if (c.resumeFrom !== undefined && typeof c.resumeFrom !== 'string') return undefined;
    if (c.uploads !== undefined && !(Array.isArray(c.uploads) && c.uploads.every(isKeptUpload))) return undefined;
    return { ...c, copied: Number(c.copied) || 0, copiedBytes: Number(c.copiedBytes) || 0 } as Checkpoint;
  } catch {
    return undefined;
  }
}

function isKeptUpload(u: unknown): u is KeptUpload {
  const k = u as Partial<KeptUpload> | null;
  const int = (n: unknown): boolean => Number.isSafeInteger(n) && (n as number) >= 0;
  return (
    typeof k === 'object' && k !== null &&
    typeof k.key === 'string' && int(k.size) && typeof k.mtime === 'number' && int(k.partSize) && (k.partSize ?? 0) > 0 &&
    typeof k.upload?.key === 'string' && typeof k.upload.uploadId === 'string' &&
    Array.isArray(k.parts) && k.parts.every((p) => int(p?.partNumber) && typeof p?.etag === 'string' && int(p?.size))
  );
}
