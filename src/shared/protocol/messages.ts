import type { JobSpec } from '../job.js';
import type { TaskBatch, TaskResult } from '../transfer/task.js';

/**
 * The manager <-> worker protocol: msgpack frames over one WebSocket, each a versioned tagged union
 * checked on receipt (validate.ts). A worker speaks first (`hello`, with the run's token); the
 * manager answers `welcome` (the job, with the credentials it resolved) or `refuse` and closes.
 * After that the worker pulls (`want`, answered by exactly one `batch` with the same `req`),
 * reports (`results`) and beats (`beat`); the manager re-shares the bandwidth (`rate`) and ends
 * the run (`end`). Nothing secret ever travels but over this authenticated channel.
 */
/** 2: tasks may be parts of a split copy (`copyPart`), which a version 1 worker cannot run. */
export const PROTOCOL_VERSION = 2;

/** No frame larger than this is read (ws `maxPayload`): a batch of 256 tasks is a few hundred KB. */
export const MAX_FRAME_BYTES = 16 << 20;

/** Close codes (4000–4999 are the application's) with the reason in the close frame. */
export const CLOSE = {
  /** Wrong or missing token. */
  badToken: 4401,
  /** Protocol version mismatch (both versions named in the reason). */
  badVersion: 4426,
  /** A frame that is not a valid message. */
  badMessage: 4400,
  /** No heartbeat within the timeout: the worker's leases went to others. */
  timeout: 4408,
  /** The run is over. */
  end: 4000,
} as const;

/** Who the worker is, for logs and the summary. */
export interface WorkerInfo {
  /** `user@host` as the manager deployed it, or the host name a joining worker reports. */
  host: string;
  pid: number;
  /** process.version of the worker's Node.js (a SEA's embedded one). */
  node: string;
  /** `uname -m` style architecture (process.arch). */
  arch: string;
  /** The ferry version of the worker build. */
  ferry: string;
  /** A label given on the command line (`--name`), e.g. the deploy host or a Slurm task id. */
  name?: string;
}

export type WorkerMessage =
  /** First frame. `token`: the run's secret; `v`: PROTOCOL_VERSION of the worker's build. */
  | { t: 'hello'; v: number; token: string; worker: WorkerInfo }
  /** Ask for a batch: at most `tasks` tasks and (but for one large task) `bytes` bytes. `req` pairs it with its `batch`. */
  | { t: 'want'; req: number; tasks: number; bytes: number }
  | { t: 'results'; results: TaskResult[] }
  /** Heartbeat; `bytes`: bytes transferred since the previous beat (for progress and throughput). */
  | { t: 'beat'; bytes: number }
  /** A line for the manager's log (join-mode workers have no SSH stderr to relay). */
  | { t: 'log'; level: 'error' | 'warn' | 'info' | 'debug'; message: string };

export type ManagerMessage =
  | {
      t: 'welcome';
      v: number;
      /** The executor id the manager knows this worker by (logs, summary). */
      id: string;
      job: JobSpec;
      /** Credential environment variables the manager resolved (Backend.credentialEnv), handed to the stores, never to process.env. */
      env: Record<string, string>;
      /** `--threads` for this executor. */
      threads: number;
      /** Bytes per second this executor may use (0: no limit). */
      rate: number;
      /** Send a `beat` at least this often (ms). */
      beatMs: number;
      /** No frame from the manager for this long (ms): it is gone, exit. */
      deadMs: number;
    }
  /** The answer to `want`: tasks, or null when no work will come again (the worker then exits). */
  | { t: 'batch'; req: number; batch: TaskBatch | null }
  /** The executor's new share of `--bwlimit` (bytes per second; 0: no limit). */
  | { t: 'rate'; rate: number }
  /** The manager's heartbeat. */
  | { t: 'beat' }
  /** Refused (token, version, a malformed frame): `reason` says why; the socket closes after it. */
  | { t: 'refuse'; reason: string }
  /** The run is over: stop, exit 0. */
  | { t: 'end'; reason: string };
