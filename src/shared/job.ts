import { FerryError, NotFoundError, UsageError } from './errors.js';
import { compileRules, compileSubtreeTest, type Rule } from './filter/rules.js';
import { makeEntryFilter, type EntryLimits } from './filter/limits.js';
import { parseAddress, redactAddress, type Address } from './storage/address.js';
import type { BackendRegistry } from './storage/registry.js';
import type { Entry, ObjectStore } from './storage/types.js';

/** The decision options of `juicefs sync`, plus ferry's quick check. */
export interface DecisionOptions {
  update: boolean;
  forceUpdate: boolean;
  existing: boolean;
  ignoreExisting: boolean;
  checkAll: boolean;
  deleteSrc: boolean;
  deleteDst: boolean;
  perms: boolean;
  dirs: boolean;
  links: boolean;
  /** Compare sizes only (juicefs's rule), even where both sides keep modification times. */
  sizeOnly: boolean;
}

/** A sync's options, as parsed: plain data. */
export interface SyncOptions extends DecisionOptions {
  start?: string;
  end?: string;
  /** Objects to handle at most (`--limit`; -1 for no limit). */
  limit: number;
  /** A file naming the keys (or 'dir/' prefixes) to sync, one per line. */
  filesFrom?: string;
  inplace: boolean;
  deleteSrcAfter: boolean;
  checkNew: boolean;
  checkChange: boolean;
  /** Stop after this many failures (-1: never). */
  maxFailure: number;
  /** Delete at most this many keys (-1: no limit); deletions past it are withheld (`--max-deletes`). */
  maxDeletes: number;
  dry: boolean;
  threads: number;
  listThreads: number;
  listDepth: number;
  /** `--list-cutoff`: directories of more names are sorted on disk. */
  listCutoff?: number;
  /** Megabits per second for the whole process; 0 means no limit. */
  bwlimit: number;
  /**
   * `--split-size`: objects larger than this many bytes, going to a store with multipart uploads,
   * are copied as parts of this size by every executor at once. 0 or absent: never.
   */
  splitSize?: number;
  storageClass?: string;
}

/**
 * What a run is, as plain data: the addresses, the options, the filter as written, and the run's
 * "now" (for --max-age), so that the manager and every worker resolve it into the same stores and
 * the same filter. Built once from the command line and never changed after.
 */
export interface JobSpec {
  v: 1;
  /** The addresses as given (secrets included: a spec travels only over authenticated channels). */
  src: string;
  dst: string;
  options: SyncOptions;
  filter: { rules: Rule[]; matchFullPath: boolean; limits: EntryLimits };
  /** Milliseconds since the epoch at the start of the run. */
  now: number;
  /** Plain HTTP for object stores (`--no-https`). */
  noHttps: boolean;
}

/** A JobSpec resolved: open stores, the compiled filter, and the options the stores allow. */
export interface ResolvedJob {
  src: ObjectStore;
  dst: ObjectStore;
  srcAddress: Address;
  dstAddress: Address;
  filter: ((e: Entry) => boolean) | undefined;
  /** Directories under which the rules keep nothing: not listed at all. */
  skipDir: ((key: string) => boolean) | undefined;
  /** The spec's options with what the stores cannot do turned off (--links, --perms), said in `notes`. */
  options: SyncOptions;
  notes: string[];
}

/** The filter a spec describes: include/exclude rules and size, age and time limits. */
export function entryFilter(f: JobSpec['filter'], now: number): ((e: Entry) => boolean) | undefined {
  const matcher = f.rules.length > 0 ? compileRules(f.rules, { matchFullPath: f.matchFullPath }) : undefined;
  const limits = Object.values(f.limits).some((v) => v !== undefined) ? makeEntryFilter({ ...f.limits, now }) : undefined;
  if (matcher && limits) return (e) => matcher(e.key) && limits(e);
  if (matcher) return (e) => matcher(e.key);
  return limits;
}

/** The address names a directory (trailing '/', a bucket's root), not a key prefix. */
export function isDirForm(a: Address): boolean {
  return a.prefix === '' || a.prefix.endsWith('/');
}

/**
 * Open a spec's stores, the same way on the manager and on a worker. Refuses mixed SRC/DST forms
 * (a usage error), copies one named file into a destination directory under its own name, and
 * refuses a source directory that does not exist. The caller closes the stores.
 */
export async function resolveJob(spec: JobSpec, registry: BackendRegistry, open: { concurrency?: number; env?: NodeJS.ProcessEnv } = {}): Promise<ResolvedJob> {
  const o = spec.options;
  const storeOptions = {
    noHttps: spec.noHttps,
    inplace: o.inplace,
    concurrency: open.concurrency ?? o.threads,
    ...(o.storageClass ? { storageClass: o.storageClass } : {}),
    // A worker's credentials come from the manager, over the cluster's authenticated channel.
    ...(open.env ? { env: open.env } : {}),
  };
  const srcAddress = parseAddress(spec.src);
  const dstAddress0 = parseAddress(spec.dst);
  const filter = entryFilter(spec.filter, spec.now);
  const subtree = spec.filter.rules.length > 0 ? compileSubtreeTest(spec.filter.rules, { matchFullPath: spec.filter.matchFullPath }) : undefined;
  const skipDir = subtree ? (key: string) => !subtree(key) : undefined;
  const src = await registry.open(srcAddress, storeOptions);
  let dst: ObjectStore | undefined;
  try {
    let dstAddress = dstAddress0;
    const srcIsDir = isDirForm(srcAddress);
    const dstIsDir = isDirForm(dstAddress0);
    if (srcIsDir !== dstIsDir) {
      // A source naming one file and a destination naming a directory: the file goes into the
      // directory under its own name, as with cp and rsync. Any other mix gives each side's keys
      // a different form ('/x' against 'x'), so every file would be copied and then deleted as
      // "extra": juicefs refuses it, and so does ferry.
      if (!srcIsDir && dstIsDir && (await isFile(src))) {
        dstAddress = { ...dstAddress0, prefix: dstAddress0.prefix + srcAddress.prefix.slice(srcAddress.prefix.lastIndexOf('/') + 1) };
      } else {
        const name = srcIsDir ? spec.dst : spec.src;
        throw new UsageError(
          `SRC and DST should both end with '/' or neither: ${JSON.stringify(srcAddress.display)} is ${srcIsDir ? 'a directory' : 'a key prefix'} and ${JSON.stringify(dstAddress0.display)} is ${dstIsDir ? 'a directory' : 'a key prefix'}. ` +
            `Add the '/' to ${JSON.stringify(redactAddress(name))} to sync directory to directory (e.g. 'ferry sync data/ backup/data/').`,
        );
      }
    }
    dst = await registry.open(dstAddress, storeOptions);
    // A directory tree that is not there is a typo, not an empty source.
    if (src.features.dirs && srcAddress.prefix === '' && !(await exists(src))) throw new NotFoundError(`the source ${srcAddress.display} does not exist`);
    const notes: string[] = [];
    let links = o.links;
    let perms = o.perms;
    if (links && !(src.features.symlinks && dst.features.symlinks)) {
      notes.push(`${src.features.symlinks ? dstAddress.display : srcAddress.display} cannot hold symlinks: --links is ignored`);
      links = false;
    }
    if (perms && !(src.features.attrs?.mode && dst.features.attrs?.mode)) {
      notes.push(`${src.features.attrs?.mode ? dstAddress.display : srcAddress.display} keeps no permissions: --perms is ignored`);
      perms = false;
    }
    return { src, dst, srcAddress, dstAddress, filter, skipDir, options: { ...o, links, perms }, notes };
  } catch (err) {
    await Promise.allSettled([src.close?.(), dst?.close?.()]);
    throw err;
  }
}

/** The store's root (key '') exists. */
async function exists(store: ObjectStore): Promise<boolean> {
  try {
    await store.head('', { followSymlinks: true });
    return true;
  } catch (err) {
    if (err instanceof FerryError && err.retry === 'notFound') return false;
    throw err;
  }
}

/** The store's root key '' is a file (the address named one file). */
async function isFile(store: ObjectStore): Promise<boolean> {
  try {
    const e = await store.head('', { followSymlinks: true });
    return !e.isDir;
  } catch {
    return false;
  }
}
