import { setMaxListeners } from 'node:events';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { compileRules, type Rule } from '../shared/filter/rules.js';
import { makeEntryFilter, parseDuration, parseSize, parseTime } from '../shared/filter/limits.js';
import { Redactor } from '../shared/redact.js';
import { parseAddress, secretsOf, type Address } from '../shared/storage/address.js';
import { defaultRegistry } from '../shared/storage/all.js';
import type { BackendRegistry, OpenOptions } from '../shared/storage/registry.js';
import { FerryError, NotSupportedYetError, UnsupportedSchemeError, UsageError } from '../shared/storage/errors.js';
import type { Entry, ObjectStore } from '../shared/storage/types.js';
import { Console, type Verbosity } from './output.js';
import { runSync, type SyncOptions } from './sync/run.js';
import { SyncStats } from './sync/stats.js';

declare const FERRY_VERSION: string | undefined;
const VERSION = typeof FERRY_VERSION === 'string' ? FERRY_VERSION : '0.0.0-dev';

/** Exit codes: 0 all done; 1 something failed or was lost; 2 bad usage; 130 interrupted. */
export const EXIT = { ok: 0, failed: 1, usage: 2, interrupted: 130 } as const;

function int(name: string, min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} takes an integer ≥ ${min}, not ${JSON.stringify(v)}.`);
    return n;
  };
}

function num(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${name} takes a number ≥ 0, not ${JSON.stringify(v)}.`);
    return n;
  };
}

const ADDRESS_HELP = `
Addresses:
  /path/dir/  ./dir/  ~/dir/  file:///path/   local disk
  [user@]host:/path/  sftp://user@host[:port]/path/   SFTP (keys, agent, ~/.ssh/config)
  s3://[AK:SK[:TOKEN]@]BUCKET[.ENDPOINT][/PREFIX]   Amazon S3 and S3-compatible stores
  minio://[AK:SK@]ENDPOINT/BUCKET[/PREFIX]          path-style S3 (MinIO)
  oss://[AK:SK@]BUCKET.oss-REGION.aliyuncs.com[/PREFIX]           Aliyun OSS
  cos://[AK:SK@]BUCKET-APPID.cos.REGION.myqcloud.com[/PREFIX]     Tencent COS
  hdfs://[user@]namenode:port/path/                  HDFS (WebHDFS)
A trailing '/' means a directory; without it the last part is a key prefix, so
'ferry sync ./te ~/mnt/ab' copies 'test' to 'abst'. Escape special characters in
keys with %XX (e.g. '/' in a secret key as %2F).

Exit status: 0 when nothing failed or was lost, 1 otherwise, 2 for bad usage,
130 when interrupted. Ctrl-C once stops listing and lets running copies finish;
twice stops at once.`;

interface ParsedSync {
  src: string;
  dst: string;
  options: SyncOptions;
  json: boolean;
  verbosity: Verbosity;
  noHttps: boolean;
  statsInterval: number;
}

function buildSyncCommand(onParsed: (p: ParsedSync) => void): Command {
  const rules: Rule[] = [];
  const cmd = new Command('sync')
    .description('Synchronise SRC to DST: copy what is missing or changed, optionally delete what is extra.')
    .argument('<SRC>', 'source address')
    .argument('<DST>', 'destination address')
    .helpOption('-h, --help', 'show this help')
    // Selection
    .option('-s, --start <KEY>', 'the first KEY to sync')
    .option('-e, --end <KEY>', 'the last KEY to sync')
    .option('--exclude <PATTERN>', 'exclude keys matching PATTERN (repeatable; order with --include matters)', (v: string) => {
      rules.push({ include: false, pattern: v });
      return v;
    })
    .option('--include <PATTERN>', "don't exclude keys matching PATTERN; put it before the --exclude it overrides", (v: string) => {
      rules.push({ include: true, pattern: v });
      return v;
    })
    .option('--match-full-path', 'match patterns against the whole key instead of level by level (rsync style)')
    .option('--max-size <SIZE>', 'skip files larger than SIZE (e.g. 100M, 1G)')
    .option('--min-size <SIZE>', 'skip files smaller than SIZE')
    .option('--max-age <DURATION>', 'skip files older than DURATION (e.g. 30m, 12h, 7d)')
    .option('--min-age <DURATION>', 'skip files newer than DURATION')
    .option('--start-time <TIME>', "skip files modified before TIME ('2006-01-02 15:04:05', local time)")
    .option('--end-time <TIME>', 'skip files modified after TIME')
    .option('--limit <N>', 'handle at most N objects (-1: no limit, 0: nothing)', int('--limit', -1), -1)
    .option('--files-from <FILE>', "sync only the keys listed in FILE, one per line ('dir/' lines sync a prefix)")
    // Decision
    .option('-u, --update', 'update existing files only when the source mtime is newer; ignore size differences')
    .option('-f, --force-update', 'always update existing files')
    .option('--existing', 'skip creating new files on the destination (alias --ignore-non-existing)')
    .option('--ignore-existing', 'skip updating files that already exist on the destination')
    .option('--size-only', 'treat files of equal size as equal even when their mtimes differ (juicefs behaviour)')
    .option('--check-all', 'verify the content of all files present on both sides')
    .option('--check-new', 'verify the content of newly copied files')
    .option('--check-change', 'fail a copy when the source changed while it was copied')
    // Action
    .option('--dirs', 'sync directories too, including empty ones')
    .option('--perms', 'preserve permissions (mode; owner and group when run as root)')
    .option('-l, --links', 'copy symlinks as symlinks instead of following them')
    .option('--inplace', 'write destination files in place instead of to a temporary name renamed into place')
    .option('--delete-src', 'delete source objects that already exist, equal, on the destination (alias --deleteSrc)')
    .option('--delete-src-after', 'delete each source object once it has been copied')
    .option('--delete-dst', 'delete destination objects that are not on the source (alias --deleteDst)')
    .option('--dry', "don't copy or delete anything; report what would be done", false)
    .option('--max-failure <N>', 'stop after N failed objects (-1: never)', int('--max-failure', -1), -1)
    // Performance
    .option('-p, --threads <N>', 'concurrent transfers', int('--threads', 1), 10)
    .option('--list-threads <N>', 'sub-trees listed at once', int('--list-threads', 1), 1)
    .option('--list-depth <N>', 'levels of directories split into sub-trees listed in parallel', int('--list-depth', 1), 1)
    .option('--bwlimit <MBPS>', 'limit bandwidth to MBPS megabits per second (0: no limit)', num('--bwlimit'), 0)
    .option('--no-https', 'use plain HTTP for object stores')
    .option('--storage-class <CLASS>', 'storage class of objects written to the destination')
    // Output
    .option('--json', 'print the final summary as one JSON object on standard output')
    .option('--stats-interval <SECONDS>', 'seconds between progress lines when standard error is not a terminal', num('--stats-interval'), 5)
    .option('-v, --verbose', 'log every key copied or deleted')
    .option('-q, --quiet', 'print errors only')
    // Later issues.
    .addOption(new Option('--worker <HOSTS>', 'hosts (user@host,...) to run workers on (not supported yet)').hideHelp())
    .addOption(new Option('--manager-addr <ADDR>').hideHelp())
    .addOption(new Option('--metrics <ADDR>').hideHelp())
    .addOption(new Option('--enable-checkpoint').hideHelp())
    .addHelpText('after', ADDRESS_HELP)
    .action((src: string, dst: string, opts: Record<string, unknown>) => {
      for (const later of ['worker', 'managerAddr', 'metrics', 'enableCheckpoint'] as const) {
        if (opts[later] !== undefined) {
          const flag = '--' + later.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
          throw new NotSupportedYetError(`${flag} is not supported yet in this version of ferry`);
        }
      }
      onParsed(toSyncOptions(src, dst, opts, rules));
    });
  return cmd;
}

function toSyncOptions(src: string, dst: string, opts: Record<string, unknown>, rules: Rule[]): ParsedSync {
  const s = (k: string) => opts[k] as string | undefined;
  const b = (k: string) => opts[k] === true;
  const n = (k: string) => opts[k] as number;
  const matchFullPath = b('matchFullPath');
  const matcher = rules.length > 0 ? compileRules(rules, { matchFullPath }) : undefined;
  const bounds = {
    ...(s('minSize') !== undefined ? { minSize: parseSize(s('minSize')!, '--min-size') } : {}),
    ...(s('maxSize') !== undefined ? { maxSize: parseSize(s('maxSize')!, '--max-size') } : {}),
    ...(s('maxAge') !== undefined ? { maxAge: parseDuration(s('maxAge')!, '--max-age') } : {}),
    ...(s('minAge') !== undefined ? { minAge: parseDuration(s('minAge')!, '--min-age') } : {}),
    ...(s('startTime') !== undefined ? { startTime: parseTime(s('startTime')!, '--start-time') } : {}),
    ...(s('endTime') !== undefined ? { endTime: parseTime(s('endTime')!, '--end-time') } : {}),
  };
  const limits = Object.keys(bounds).length > 0 ? makeEntryFilter({ ...bounds, now: Date.now() }) : undefined;
  let filter: ((e: Entry) => boolean) | undefined;
  if (matcher && limits) filter = (e) => matcher(e.key) && limits(e);
  else if (matcher) filter = (e) => matcher(e.key);
  else if (limits) filter = limits;
  if (b('quiet') && b('verbose')) throw new UsageError('--quiet and --verbose contradict each other');
  if (b('update') && b('forceUpdate')) throw new UsageError('--update and --force-update contradict each other');
  if (b('existing') && b('ignoreExisting')) throw new UsageError('--existing and --ignore-existing together would copy nothing');
  const options: SyncOptions = {
    update: b('update'),
    forceUpdate: b('forceUpdate'),
    existing: b('existing'),
    ignoreExisting: b('ignoreExisting'),
    checkAll: b('checkAll'),
    deleteSrc: b('deleteSrc'),
    deleteDst: b('deleteDst'),
    perms: b('perms'),
    dirs: b('dirs'),
    links: b('links'),
    sizeOnly: b('sizeOnly'),
    ...(s('start') !== undefined ? { start: s('start')! } : {}),
    ...(s('end') !== undefined ? { end: s('end')! } : {}),
    ...(filter ? { filter } : {}),
    limit: n('limit'),
    ...(s('filesFrom') !== undefined ? { filesFrom: s('filesFrom')! } : {}),
    inplace: b('inplace'),
    deleteSrcAfter: b('deleteSrcAfter'),
    checkNew: b('checkNew'),
    checkChange: b('checkChange'),
    maxFailure: n('maxFailure'),
    dry: b('dry'),
    threads: n('threads'),
    listThreads: n('listThreads'),
    listDepth: n('listDepth'),
    bwlimit: n('bwlimit'),
    ...(s('storageClass') ? { storageClass: s('storageClass')! } : {}),
  };
  return {
    src,
    dst,
    options,
    json: b('json'),
    verbosity: b('quiet') ? 'quiet' : b('verbose') ? 'verbose' : 'normal',
    noHttps: opts['https'] === false,
    statsInterval: n('statsInterval'),
  };
}

/** What main() runs against: the process's streams and the storage backends. */
export interface CliEnvironment {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  /** The backends addresses open with (tests point cloud backends at local servers). */
  registry?: BackendRegistry;
}

async function runSyncCommand(p: ParsedSync, out: CliEnvironment): Promise<number> {
  const registry = out.registry ?? defaultRegistry();
  const openStore = (a: Address, options: OpenOptions) => registry.open(a, options);
  const redactor = new Redactor();
  const srcAddr = parseAddress(p.src);
  const dstAddr = parseAddress(p.dst);
  for (const secret of [...secretsOf(srcAddr), ...secretsOf(dstAddr)]) redactor.add(secret);
  const con = new Console(redactor, p.verbosity, out.stderr);
  const o = p.options;
  const storeOptions = { noHttps: p.noHttps, inplace: o.inplace, concurrency: o.threads, ...(o.storageClass ? { storageClass: o.storageClass } : {}) };
  let src: ObjectStore | undefined;
  let dst: ObjectStore | undefined;
  const stopListing = new AbortController();
  const stopNow = new AbortController();
  // Every request of the run listens on these: more than the default ten listeners is normal.
  setMaxListeners(0, stopListing.signal, stopNow.signal);
  let interrupts = 0;
  const onSigint = () => {
    interrupts++;
    if (interrupts === 1) {
      con.warn('interrupted: no new copies start; running ones finish (Ctrl-C again to stop at once)');
      stopListing.abort();
    } else {
      con.warn('stopping now');
      stopNow.abort();
    }
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);
  try {
    try {
      src = await openStore(srcAddr, storeOptions);
      // A source naming one file and a destination naming a directory: the file goes into the
      // directory under its own name, as with cp and rsync (juicefs would write to the directory's path).
      let to = dstAddr;
      if (srcAddr.prefix !== '' && !srcAddr.prefix.endsWith('/') && (dstAddr.prefix === '' || dstAddr.prefix.endsWith('/')) && (await isFile(src))) {
        to = { ...dstAddr, prefix: dstAddr.prefix + srcAddr.prefix.slice(srcAddr.prefix.lastIndexOf('/') + 1) };
      }
      dst = await openStore(to, storeOptions);
      // A directory tree that is not there is a typo, not an empty source.
      if (src.features.dirs && srcAddr.prefix === '' && !(await exists(src))) {
        con.error(`the source ${srcAddr.display} does not exist`);
        return EXIT.failed;
      }
    } catch (err) {
      con.error(messageOf(err));
      return err instanceof UsageError || err instanceof UnsupportedSchemeError || err instanceof NotSupportedYetError ? EXIT.usage : EXIT.failed;
    }
    if (o.links && !(src.features.symlinks && dst.features.symlinks)) {
      con.warn(`${src.features.symlinks ? dstAddr.display : srcAddr.display} cannot hold symlinks: --links is ignored`);
      o.links = false;
    }
    if (o.perms && !(src.features.attrs?.mode && dst.features.attrs?.mode)) {
      con.warn(`${src.features.attrs?.mode ? dstAddr.display : srcAddr.display} keeps no permissions: --perms is ignored`);
      o.perms = false;
    }
    const stats = new SyncStats();
    con.startProgress(stats, p.statsInterval * 1000);
    const result = await runSync(src, dst, o, { stopListing: stopListing.signal, stopNow: stopNow.signal, logger: con, stats });
    con.stopProgress();
    con.info(stats.summaryLine());
    if (result.stopped) con.warn(`the run stopped early (${result.stopped === 'interrupted' ? 'interrupted' : 'too many failures'}): run the same command again to finish`);
    if (p.json) out.stdout.write(redactor.redact(JSON.stringify({ ...stats.toJSON(), ...(result.stopped ? { stopped: result.stopped } : {}) })) + '\n');
    if (interrupts > 0) return EXIT.interrupted;
    return result.fatal !== undefined || stats.failed > 0 || stats.lost > 0 || result.stopped ? EXIT.failed : EXIT.ok;
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
    await Promise.allSettled([src?.close?.(), dst?.close?.()]);
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

function messageOf(err: unknown): string {
  if (err instanceof FerryError) return `${err.message} [${err.code}]`;
  return (err as Error)?.message ?? String(err);
}

/** juicefs's second names for some options. */
const ALIASES: Record<string, string> = {
  '--ignore-non-existing': '--existing',
  '--deleteSrc': '--delete-src',
  '--deleteDst': '--delete-dst',
};

/** Run the command line; resolves to the exit code. */
export async function main(args: string[], out: CliEnvironment = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const end = args.indexOf('--');
  const argv = args.map((a, i) => (end >= 0 && i > end ? a : (ALIASES[a] ?? a)));
  // Whatever is said before a run has its own redactor: every secret any argument carries.
  const redactor = new Redactor();
  for (const a of args) {
    try {
      for (const secret of secretsOf(parseAddress(a))) redactor.add(secret);
    } catch {
      // not an address
    }
  }
  let parsed: ParsedSync | undefined;
  const program = new Command('ferry')
    .description('Move and protect data between storages: local disks, SFTP, HDFS, S3 and S3-compatible stores, Aliyun OSS, Tencent COS.')
    .version(VERSION, '-V, --version')
    .helpOption('-h, --help', 'show this help')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeOut: (s) => out.stdout.write(s), writeErr: (s) => out.stderr.write(redactor.redact(s)) });
  const sync = buildSyncCommand((p) => (parsed = p))
    .exitOverride()
    .showHelpAfterError('(run "ferry sync --help" for usage)')
    .configureOutput({ writeOut: (s) => out.stdout.write(s), writeErr: (s) => out.stderr.write(redactor.redact(s)) });
  program.addCommand(sync);
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      // 'commander.help': help shown because no command was given — a usage error.
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return EXIT.ok;
      return EXIT.usage;
    }
    out.stderr.write(redactor.redact(`ferry: error: ${messageOf(err)}\n`));
    return err instanceof UsageError || err instanceof NotSupportedYetError ? EXIT.usage : EXIT.failed;
  }
  if (!parsed) return EXIT.usage;
  try {
    return await runSyncCommand(parsed, out);
  } catch (err) {
    out.stderr.write(redactor.redact(`ferry: error: ${messageOf(err)}\n`));
    return err instanceof UsageError ? EXIT.usage : EXIT.failed;
  }
}
