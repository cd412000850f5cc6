import type { SyncOptions } from '../../src/shared/job.js';

/** `ferry sync`'s defaults as plain options (threads lowered for tests): what tests start from and override. */
export const SYNC_OPTIONS: SyncOptions = {
  update: false,
  forceUpdate: false,
  existing: false,
  ignoreExisting: false,
  checkAll: false,
  deleteSrc: false,
  deleteDst: false,
  perms: false,
  dirs: false,
  links: false,
  sizeOnly: false,
  limit: -1,
  inplace: false,
  deleteSrcAfter: false,
  checkNew: false,
  checkChange: false,
  maxFailure: -1,
  maxDeletes: -1,
  dry: false,
  threads: 4,
  listThreads: 1,
  listDepth: 1,
  bwlimit: 0,
};

/** A sync's logger that prints nothing (runSync's `logger`). */
export const QUIET = { error() {}, warn() {}, info() {}, debug() {} };
