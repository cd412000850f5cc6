import { setMaxListeners } from 'node:events';
import { stat } from 'node:fs/promises';
import { PassThrough, type Readable } from 'node:stream';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import type { Rule } from '../shared/filter/rules.js';
import { parseDuration, parseSize, parseTime, type EntryLimits } from '../shared/filter/limits.js';
import { entryFilter, isDirForm, resolveJob, type JobSpec, type ResolvedJob, type SyncOptions } from '../shared/job.js';
import { Redactor } from '../shared/redact.js';
import { parseAddress, redactAddress, secretsOf, type Address } from '../shared/storage/address.js';
import { isFilesystemRoot, overlap, storageLocation } from '../shared/storage/location.js';
import { defaultRegistry } from '../shared/storage/all.js';
import type { BackendRegistry } from '../shared/storage/registry.js';
import type { SshOptions } from '../shared/ssh/index.js';
import { FerryError, NotFoundError, NotSupportedYetError, UnsupportedSchemeError, UsageError } from '../shared/errors.js';
import { Console, type Verbosity } from './output.js';
// Cluster mode, the worker's command line and the metrics server load only when asked for: a sync
// on one machine starts without them.
import type { Cluster } from './cluster/index.js';
import type { MetricsServer } from './metrics.js';
import { Checkpointer } from './sync/checkpoint.js';
import { backupIfDue, type BackupReport } from './backup/schedule.js';
import { dumpProducer } from './backup/produce.js';
import { parseInterval, repeatRuns } from './repeat.js';
import { compareKeys } from '../shared/storage/keys.js';
import { ByteRateLimiter } from '../shared/throttle/bucket.js';
import { runSync, MANAGER, type ResumeState, type RunControl } from './sync/run.js';
import type { KeptUpload } from './sync/ledger.js';
import { formatBytes, SyncStats } from './sync/stats.js';
import type { ObjectStore } from '../shared/storage/types.js';
import { describeCounters, emptyCounters, plural, type DumpCounters, type DumpEntry } from './dump/entry.js';
// The dump writer and the loader (archives, zlib) are loaded by their own commands.
import type { DumpOptions, DumpResult } from './dump/dump.js';
import { formatOf, type DumpFormat } from './dump/format.js';
import type { LoadInput, LoadOptions, LoadReport } from './dump/load.js';

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

function atLeast(name: string, min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new InvalidArgumentError(`${name} takes a number ≥ ${min}, not ${JSON.stringify(v)}.`);
    return n;
  };
}

/**
 * Options of `juicefs sync` (and its global ones) that ferry does not have yet: they answer "not
 * supported yet", not "unknown option". [flags, commander's attribute name, its value when absent].
 */
const JUICEFS_LATER: [string, string, unknown][] = [
  ['--debug', 'debug', undefined],
  ['--trace', 'trace', undefined],
  ['--log-level <LEVEL>', 'logLevel', undefined],
  ['--log-id <ID>', 'logId', undefined],
  ['--no-agent', 'agent', true],
  ['--no-color', 'color', true],
  ['--pyroscope <ADDR>', 'pyroscope', undefined],
  ['--manager <ADDR>', 'manager', undefined],
  ['--consul <ADDR>', 'consul', undefined],
  ['--http-port <PORT>', 'httpPort', undefined],
  ['--encrypt-rsa-key <PATH>', 'encryptRsaKey', undefined],
  ['--encrypt-algo <ALGO>', 'encryptAlgo', undefined],
];


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
'ferry sync ./te ~/mnt/ab' copies 'test' to 'abst'. SRC and DST both end with '/'
or neither does; the one exception is a SRC naming one file, copied into the DST
directory. With a prefix DST, --delete-dst reaches every key that starts with it:
'ferry sync --delete-dst data backup/config' may delete 'backup/config.old/x' and
'backup/configuration.yaml' too. Escape special characters in keys with %XX (e.g.
'/' in a secret key as %2F).

Safety: nothing is deleted under a prefix whose listing was incomplete (an
unreadable directory, a name ferry cannot address); SRC and DST that overlap are
refused with --delete-src, --delete-src-after, --delete-dst and --force-update;
--delete-dst at the root of a file system needs --allow-root; keys that would leave
a local, SFTP or HDFS destination ('..', '/x') and writes through symlinks inside
it are refused; FIFOs, sockets and devices are skipped.

Exit status: 0 when nothing failed or was lost, 1 otherwise, 2 for bad usage,
130 when interrupted. Ctrl-C once stops listing and lets running copies finish;
twice stops at once. With --repeat, the status is the last run's: 130 when Ctrl-C
interrupted a run (which finishes as above, and no run starts after it), the last
finished run's when Ctrl-C came while waiting for the next; a run refused as bad
usage (2) ends the loop. A metadata backup (--backup-meta) that fails makes its
run's status 1; one skipped (not due, claimed by another manager) does not.`;

interface ParsedSync {
  /** The run, as plain data. */
  spec: JobSpec;
  json: boolean;
  verbosity: Verbosity;
  statsInterval: number;
  allowRoot: boolean;
  /** `--metrics HOST:PORT`: serve the counters for Prometheus. */
  metrics?: string;
  /** `--enable-checkpoint`: milliseconds between checkpoints. */
  checkpointMs?: number;
  /** `--repeat INTERVAL`: run again and again, a run starting INTERVAL after the previous one started. */
  repeat?: { ms: number; text: string };
  /** `--backup-meta INTERVAL`: a metadata backup of SRC in DST/.ferry/meta/ once per INTERVAL. */
  backupMeta?: { ms: number; text: string };
  /** Cluster mode: absent on one machine. */
  cluster?: {
    hosts: string[];
    managerAddr?: string;
    /** `--listen HOST:PORT` for workers that join; their token is in `tokenFile`. */
    listen?: string;
    tokenFile?: string;
    strict: boolean;
    managerExecutes: boolean;
    /** Milliseconds of silence after which a worker loses its tasks. */
    silenceMs: number;
    /** Milliseconds any task may be held, before its size adds to it. */
    leaseMs: number;
  };
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
    .option('--max-deletes <N>', 'delete at most N objects; once N is reached further deletions are withheld and the run exits 1 (-1: no limit)', int('--max-deletes', -1), -1)
    .option('--allow-root', 'allow --delete-dst (and --delete-src) at the root of a file system')
    // Performance
    .option('-p, --threads <N>', 'concurrent transfers', int('--threads', 1), 10)
    .option('--list-threads <N>', 'sub-trees listed at once', int('--list-threads', 1), 1)
    .option('--list-depth <N>', 'levels of directories split into sub-trees listed in parallel', int('--list-depth', 1), 1)
    .option('--list-cutoff <N>', 'sort the names of a directory larger than N on disk, in a temporary file, to save memory', int('--list-cutoff', 1), 1_000_000)
    .option('--bwlimit <MBPS>', 'limit bandwidth to MBPS megabits per second (0: no limit)', atLeast('--bwlimit', 0), 0)
    .option('--split-size <SIZE>', 'copy an object larger than SIZE in parts of SIZE, uploaded by every executor at once, where the destination takes multipart uploads (0: never)', '256M')
    .option('--no-https', 'use plain HTTP for object stores')
    .option('--storage-class <CLASS>', 'storage class of objects written to the destination')
    // Output
    .option('--json', 'print the final summary as one JSON object on standard output')
    .option('--stats-interval <SECONDS>', 'seconds between progress lines when standard error is not a terminal (at least 1)', atLeast('--stats-interval', 1), 5)
    .option('-v, --verbose', 'log every key copied or deleted')
    .option('-q, --quiet', 'print errors only')
    // Later issues.
    // Cluster
    .option('--worker <HOSTS>', 'run workers on these hosts too: user@host[:port] or ~/.ssh/config aliases, comma-separated (repeatable); deployed over SSH', (v: string, prev: string[] = []) => [...prev, ...v.split(',').map((h) => h.trim()).filter(Boolean)])
    .option('--manager-addr <HOST:PORT>', 'workers connect straight to this address of the manager instead of through their SSH connection (unencrypted, storage credentials included: trusted networks only)')
    .option('--listen <HOST:PORT>', 'also wait for workers that join on their own (ferry worker --manager ws://HOST:PORT --token-file FILE), e.g. started by Slurm or Kubernetes; needs --token-file')
    .addOption(new Option('--token-file <FILE>', "the run's token for --listen: a file whose first line is a secret the joining workers hold too").env('FERRY_TOKEN_FILE'))
    .option('--ssh-strict', 'refuse worker hosts that are not in known_hosts yet (default: record them, as ssh accept-new does)')
    .option('--no-manager-exec', 'the manager only lists and dispatches; the workers run every task (the manager takes over if none is left, unless --listen waits for joiners)')
    .option('--heartbeat-timeout <SECONDS>', 'a worker silent this long loses its tasks to other executors', atLeast('--heartbeat-timeout', 1), 20)
    .option('--task-lease <SECONDS>', 'a worker holding a task longer than this (plus 1 s per MiB of it) is disconnected and its tasks go to others (the manager\'s own executor is exempt)', atLeast('--task-lease', 1), 3600)
    .option('--metrics <HOST:PORT>', 'serve the run\'s counters, per-executor throughput and lease losses for Prometheus at http://HOST:PORT/metrics (juicefs: 127.0.0.1:9567)')
    .option('--enable-checkpoint', "keep the run's progress in DST/.ferry/ so that the same command, run again after a crash or Ctrl-C, resumes where it stopped (large objects' multipart uploads included)")
    .option('--checkpoint-interval <DURATION>', 'how often the progress is written (with --enable-checkpoint)', '10s')
    // Scheduled DR replication
    .option('--repeat <INTERVAL>', 'keep syncing until Ctrl-C: a run starts INTERVAL (30s, 10m, 1h, 1d, 1h30m) after the previous one started, at once if that one took longer; one summary per run; the exit status is the last run\'s (see below)')
    .option('--backup-meta <INTERVAL>', 'after the sync (each run with --repeat), write a metadata backup of SRC to DST/.ferry/meta/dump-YYYY-MM-DD-HHMMSS.json.gz (UTC) when the current INTERVAL (aligned to UTC multiples of INTERVAL) has none; one manager per interval (a claim); old backups pruned: all of the last 2 days, one a day to 2 weeks, one a week to 2 months, one a month after');
  for (const [flags] of JUICEFS_LATER) cmd.addOption(new Option(flags).hideHelp());
  cmd
    .addHelpText('after', ADDRESS_HELP)
    .action((src: string, dst: string, opts: Record<string, unknown>) => {
      for (const [flags, attr, unset] of JUICEFS_LATER) {
        if (opts[attr] !== unset) throw new NotSupportedYetError(`${flags.split(' ')[0]} (a juicefs sync option) is not supported yet in this version of ferry`);
      }
      onParsed(toSyncOptions(src, dst, opts, rules));
    });
  return cmd;
}

function toSyncOptions(src: string, dst: string, opts: Record<string, unknown>, rules: Rule[]): ParsedSync {
  const s = (k: string) => opts[k] as string | undefined;
  const b = (k: string) => opts[k] === true;
  const n = (k: string) => opts[k] as number;
  const limits: EntryLimits = {
    ...(s('minSize') !== undefined ? { minSize: parseSize(s('minSize')!, '--min-size') } : {}),
    ...(s('maxSize') !== undefined ? { maxSize: parseSize(s('maxSize')!, '--max-size') } : {}),
    ...(s('maxAge') !== undefined ? { maxAge: parseDuration(s('maxAge')!, '--max-age') } : {}),
    ...(s('minAge') !== undefined ? { minAge: parseDuration(s('minAge')!, '--min-age') } : {}),
    ...(s('startTime') !== undefined ? { startTime: parseTime(s('startTime')!, '--start-time') } : {}),
    ...(s('endTime') !== undefined ? { endTime: parseTime(s('endTime')!, '--end-time') } : {}),
  };
  const filter = { rules: [...rules], matchFullPath: b('matchFullPath'), limits };
  const now = Date.now();
  // Bad rules and contradicting limits are usage errors now, not when the run starts.
  entryFilter(filter, now);
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
    limit: n('limit'),
    ...(s('filesFrom') !== undefined ? { filesFrom: s('filesFrom')! } : {}),
    inplace: b('inplace'),
    deleteSrcAfter: b('deleteSrcAfter'),
    checkNew: b('checkNew'),
    checkChange: b('checkChange'),
    maxFailure: n('maxFailure'),
    maxDeletes: n('maxDeletes'),
    dry: b('dry'),
    threads: n('threads'),
    listThreads: n('listThreads'),
    listDepth: n('listDepth'),
    listCutoff: n('listCutoff'),
    bwlimit: n('bwlimit'),
    splitSize: parseSize(s('splitSize')!, '--split-size'),
    ...(s('storageClass') ? { storageClass: s('storageClass')! } : {}),
  };
  const hosts = (opts['worker'] as string[] | undefined) ?? [];
  const listen = s('listen');
  if (s('managerAddr') !== undefined && hosts.length === 0) throw new UsageError('--manager-addr needs --worker: it says where the workers connect');
  if (opts['managerExec'] === false && hosts.length === 0 && listen === undefined) throw new UsageError('--no-manager-exec needs --worker or --listen: someone has to run the tasks');
  if (listen !== undefined && s('tokenFile') === undefined) throw new UsageError('--listen needs --token-file (or FERRY_TOKEN_FILE): the workers that join must present the same token');
  return {
    ...(hosts.length > 0 || listen !== undefined
      ? {
          cluster: {
            hosts: [...new Set(hosts)],
            ...(s('managerAddr') !== undefined ? { managerAddr: s('managerAddr')! } : {}),
            ...(listen !== undefined ? { listen, tokenFile: s('tokenFile')! } : {}),
            strict: b('sshStrict'),
            managerExecutes: opts['managerExec'] !== false,
            silenceMs: n('heartbeatTimeout') * 1000,
            leaseMs: n('taskLease') * 1000,
          },
        }
      : {}),
    ...(s('metrics') !== undefined ? { metrics: s('metrics')! } : {}),
    ...(b('enableCheckpoint') ? { checkpointMs: checkpointInterval(s('checkpointInterval')!) } : {}),
    ...(s('repeat') !== undefined ? { repeat: { ms: parseInterval(s('repeat')!, '--repeat'), text: s('repeat')! } } : {}),
    ...(s('backupMeta') !== undefined ? { backupMeta: { ms: parseInterval(s('backupMeta')!, '--backup-meta'), text: s('backupMeta')! } } : {}),
    spec: { v: 1, src, dst, options, filter, now, noHttps: opts['https'] === false },
    json: b('json'),
    verbosity: b('quiet') ? 'quiet' : b('verbose') ? 'verbose' : 'normal',
    statsInterval: n('statsInterval'),
    allowRoot: b('allowRoot'),
  };
}

/** What main() runs against: the process's streams and the storage backends. */
export interface CliEnvironment {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  /** The backends addresses open with (tests point cloud backends at local servers). */
  registry?: BackendRegistry;
  /** SSH files for worker hosts (tests); default: the user's ~/.ssh. */
  ssh?: SshOptions;
  /** What `ferry load` reads when IN is '-' (default: the process's standard input). */
  stdin?: NodeJS.ReadableStream;
}

async function runSyncCommand(p: ParsedSync, out: CliEnvironment): Promise<number> {
  return p.repeat ? runRepeating(p, p.repeat.ms, out) : runSyncOnce(p, out);
}

/**
 * `--repeat`: the same run again and again until Ctrl-C (src/manager/repeat.ts), each with its own
 * summary and its own "now" (for --max-age and the like). Ctrl-C during a run reaches the run's own
 * handler too: it finishes as a single run does, and no run starts after it.
 */
async function runRepeating(p: ParsedSync, intervalMs: number, out: CliEnvironment): Promise<number> {
  const redactor = new Redactor();
  for (const secret of [...secretsOf(parseAddress(p.spec.src)), ...secretsOf(parseAddress(p.spec.dst))]) redactor.add(secret);
  const con = new Console(redactor, p.verbosity, out.stderr);
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await repeatRuns({
      intervalMs,
      run: (n) => runSyncOnce({ ...p, spec: { ...p.spec, now: Date.now() } }, out, n),
      stop: stop.signal,
      final: [EXIT.usage],
      log: con,
    });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** One run of `ferry sync` (the `run`-th of --repeat). */
async function runSyncOnce(p: ParsedSync, out: CliEnvironment, run?: number): Promise<number> {
  const registry = out.registry ?? defaultRegistry();
  const redactor = new Redactor();
  const srcAddr = parseAddress(p.spec.src);
  const dstAddr = parseAddress(p.spec.dst);
  for (const secret of [...secretsOf(srcAddr), ...secretsOf(dstAddr)]) redactor.add(secret);
  const con = new Console(redactor, p.verbosity, out.stderr);
  const stats = new SyncStats();
  let backup: BackupReport | undefined = p.backupMeta ? { status: 'skipped', reason: 'refused', message: 'no metadata backup: the run was refused' } : undefined;
  /** The summary (--json: on standard output, also when the run failed before it started). */
  const finish = (code: number, failure?: string, stopped?: string, ran = true): number => {
    if (ran) con.info(stats.summaryLine(failure));
    if (p.json) {
      const summary = { ...(run === undefined ? {} : { run }), ...stats.toJSON(), executors: stats.executorsJSON(), ...(stopped ? { stopped } : {}), ...(backup ? { backup } : {}), exitCode: code, error: failure ?? null };
      out.stdout.write(redactor.redact(JSON.stringify(summary)) + '\n');
    }
    return code;
  };
  /** A run refused before anything was touched. */
  const refuse = (err: unknown): number => {
    con.error(messageOf(err));
    const usage = err instanceof UsageError || err instanceof UnsupportedSchemeError || err instanceof NotSupportedYetError;
    return finish(usage ? EXIT.usage : EXIT.failed, messageOf(err), undefined, false);
  };
  let job: ResolvedJob;
  try {
    checkDestructive(srcAddr, dstAddr, p.spec.options, p.allowRoot);
    if (p.backupMeta && !isDirForm(dstAddr)) throw new UsageError(`--backup-meta needs a directory as DST (ending in '/'): ${JSON.stringify(dstAddr.display)} is a key prefix`);
    job = await resolveJob(p.spec, registry);
  } catch (err) {
    return refuse(err);
  }
  const o = job.options;
  for (const note of job.notes) con.warn(note);
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
  let cluster: Cluster | undefined;
  let metrics: MetricsServer | undefined;
  try {
    if (p.metrics !== undefined) {
      try {
        const { MetricsServer } = await import('./metrics.js');
        metrics = await MetricsServer.listen(p.metrics, stats);
      } catch (err) {
        return refuse(err);
      }
      con.info(`metrics for Prometheus at ${metrics.url}`);
    }
    const extra: Partial<RunControl> = {};
    if (p.cluster) {
      const c = p.cluster;
      const total = (o.bwlimit * 1e6) / 8;
      try {
        const { startCluster } = await import('./cluster/index.js');
        cluster = await startCluster({
          hosts: c.hosts,
          ...(c.managerAddr !== undefined ? { managerAddr: c.managerAddr } : {}),
          ...(c.listen !== undefined ? { listen: c.listen, token: await tokenFrom(c.tokenFile!), waitForJoiners: !c.managerExecutes } : {}),
          strict: c.strict,
          spec: p.spec,
          registry,
          threads: o.threads,
          bandwidth: total,
          beatMs: Math.min(2000, Math.max(250, c.silenceMs / 5)),
          silenceMs: c.silenceMs,
          stats,
          log: con,
          verbose: p.verbosity === 'verbose',
          ...(out.ssh ? { ssh: out.ssh } : {}),
          signal: stopNow.signal,
        });
      } catch (err) {
        return refuse(err);
      }
      extra.cluster = cluster.server;
      extra.managerExecutes = c.managerExecutes;
      extra.lease = { baseMs: c.leaseMs, minRate: 1 << 20 };
      if (cluster.bandwidth) {
        const limiter = new ByteRateLimiter(total);
        extra.limiter = limiter;
        const share = cluster.bandwidth;
        // The manager's executor takes its share when it starts (with --no-manager-exec, only if it takes over).
        extra.onManagerExecutes = () => share.join(MANAGER, (rate) => limiter.setRate(rate));
      }
      if (c.hosts.length > 0) con.info(`cluster: deploying workers to ${c.hosts.join(', ')}; the manager ${c.managerExecutes ? 'runs tasks too' : 'only dispatches'}`);
    }
    if (o.deleteDst && !isDirForm(dstAddr) && (o.dry || p.verbosity === 'verbose')) {
      const last = dstAddr.prefix.slice(dstAddr.prefix.lastIndexOf('/') + 1);
      con.warn(
        `${JSON.stringify(dstAddr.display)} has no trailing '/': it is a key prefix, so --delete-dst reaches every destination key starting with it ` +
          `(such as '${last}.old/…' or '${last}-2.txt'), not only the directory '${last}/'`,
      );
    }
    let runOptions = o;
    let checkpointer: Checkpointer | undefined;
    let keptUploads: KeptUpload[] = [];
    if (p.checkpointMs !== undefined) {
      if (o.dry) con.info('--dry: no checkpoint is read or written');
      else if (!isDirForm(dstAddr)) con.warn(`--enable-checkpoint needs a directory as DST (ending in '/'): ${JSON.stringify(dstAddr.display)} is a key prefix; no checkpoint is kept`);
      else {
        checkpointer = new Checkpointer(job.dst, p.spec, con);
        const found = await checkpointer.load();
        keptUploads = found?.uploads ?? [];
        if (keptUploads.length > 0) con.info(`${keptUploads.length} multipart ${keptUploads.length === 1 ? 'upload' : 'uploads'} of the interrupted run continue from the ${keptUploads.reduce((n, u) => n + u.parts.length, 0)} parts already stored`);
        if (found?.resumeFrom !== undefined) {
          const from = o.start !== undefined && compareKeys(o.start, found.resumeFrom) > 0 ? o.start : found.resumeFrom;
          runOptions = { ...o, start: from };
          con.info(`resuming the run checkpointed at ${found.writtenAt} (${found.copied} copied by then): every key before ${JSON.stringify(from)} is done and is not listed again`);
        } else if (found) con.info(`a checkpoint of this run was found (${found.writtenAt}) with nothing done yet: starting from the beginning`);
      }
    }
    const saveCheckpoint = (state: ResumeState) => checkpointer?.save(state, { copied: stats.copied, copiedBytes: stats.copiedBytes });
    con.startProgress(stats, p.statsInterval * 1000, p.cluster !== undefined);
    const result = await runSync(job.src, job.dst, runOptions, {
      stopListing: stopListing.signal,
      stopNow: stopNow.signal,
      logger: con,
      stats,
      ...(job.filter ? { filter: job.filter } : {}),
      ...(job.skipDir ? { skipDir: job.skipDir } : {}),
      ...extra,
      ...(checkpointer ? { checkpoint: { intervalMs: p.checkpointMs!, save: (state: ResumeState) => void saveCheckpoint(state), uploads: keptUploads } } : {}),
    });
    await cluster?.stop();
    con.stopProgress();
    if (stats.reclaimed > 0) con.info(`reclaimed ${stats.reclaimed} temporary files (${formatBytes(stats.reclaimedBytes)}) left on the destination by runs that were killed`);
    if (result.stopped) con.warn(`the run stopped early (${result.stopped === 'interrupted' ? 'interrupted' : 'too many failures'}): run the same command again to finish`);
    const failure =
      result.fatal !== undefined
        ? messageOf(result.fatal)
        : result.stopped === 'interrupted'
          ? 'interrupted'
          : result.stopped === 'maxFailure'
            ? `more than ${o.maxFailure} failures (--max-failure)`
            : stats.failed > 0 || stats.lost > 0
              ? `${stats.failed} failed, ${stats.lost} lost`
              : stats.incomplete > 0
                ? `${stats.incomplete} prefixes were listed incompletely: nothing under them was deleted`
                : stats.protected > 0
                  ? `${stats.protected} deletions withheld by --max-deletes`
                  : undefined;
    if (checkpointer) {
      if (failure === undefined && interrupts === 0) await checkpointer.remove();
      else {
        await saveCheckpoint(result);
        con.info(`progress kept in ${checkpointer.key} on the destination: run the same command again to resume`);
      }
    }
    if (p.backupMeta) {
      if (o.dry) backup = { status: 'skipped', reason: 'dry', message: '--dry: no metadata backup is written' };
      else if (interrupts > 0) backup = { status: 'skipped', reason: 'interrupted', message: 'no metadata backup: the run was interrupted' };
      else {
        // Ctrl-C during the backup stops it (nothing of it is kept); the run is interrupted then.
        const setting = { src: redactAddress(p.spec.src), backupMeta: p.backupMeta.text, by: `ferry ${VERSION} sync --backup-meta` };
        backup = await backupIfDue({ dst: job.dst, intervalMs: p.backupMeta.ms, produce: dumpProducer(job.src, setting), log: con, signal: stopListing.signal });
      }
      if (backup.status === 'skipped' && (backup.reason === 'dry' || backup.reason === 'interrupted')) con.info(backup.message);
    }
    // A backup that failed fails the run (a DR copy without its metadata backup is not what was asked for).
    const failed = failure ?? (backup?.status === 'failed' ? backup.message : undefined);
    return finish(interrupts > 0 ? EXIT.interrupted : failed === undefined ? EXIT.ok : EXIT.failed, failed, result.stopped);
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
    await cluster?.stop();
    await metrics?.close();
    await Promise.allSettled([job.src.close?.(), job.dst.close?.()]);
  }
}

/**
 * Refuse, before anything is touched, runs whose deletions or forced rewrites could destroy what
 * they copy: SRC and DST overlapping (rclone: "can't sync or move files on overlapping remotes"),
 * or deleting at the root of a file system without --allow-root.
 */
function checkDestructive(srcAddr: Address, dstAddr: Address, o: SyncOptions, allowRoot: boolean): void {
  const flags = [o.deleteSrc && '--delete-src', o.deleteSrcAfter && '--delete-src-after', o.deleteDst && '--delete-dst', o.forceUpdate && '--force-update'].filter(Boolean);
  if (flags.length === 0) return;
  const s = storageLocation(srcAddr);
  const d = storageLocation(dstAddr);
  if (!allowRoot) {
    if (o.deleteDst && isFilesystemRoot(d)) throw new UsageError(`--delete-dst at the root of a file system (${JSON.stringify(dstAddr.display)}) could delete everything on it: add --allow-root if that is what you mean`);
    if ((o.deleteSrc || o.deleteSrcAfter) && isFilesystemRoot(s)) throw new UsageError(`${o.deleteSrc ? '--delete-src' : '--delete-src-after'} at the root of a file system (${JSON.stringify(srcAddr.display)}) needs --allow-root`);
  }
  if (overlap(s, d)) {
    const how = s.path === d.path ? 'are the same place' : d.path.startsWith(s.path) ? 'overlap: DST is inside SRC' : 'overlap: SRC is inside DST';
    throw new UsageError(`SRC ${JSON.stringify(srcAddr.display)} and DST ${JSON.stringify(dstAddr.display)} ${how} (${s.path} and ${d.path}); refusing ${flags.join(', ')}, which could delete or overwrite what the run copies`);
  }
}



/** `--checkpoint-interval`: a duration of at least a second. */
function checkpointInterval(v: string): number {
  const ms = parseDuration(v, '--checkpoint-interval');
  if (ms < 1000) throw new UsageError(`--checkpoint-interval takes a duration of at least 1s, not ${JSON.stringify(v)}`);
  return ms;
}

/** The run's token from --token-file: a usage error when it cannot be read or is empty. */
async function tokenFrom(file: string): Promise<string> {
  try {
    const { readTokenFile } = await import('../worker/cli.js');
    return readTokenFile(file);
  } catch (err) {
    throw new UsageError(`--token-file: ${(err as Error).message}`);
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
  // `ferry dump` and `ferry load` run what their action leaves here.
  let other: (() => Promise<number>) | undefined;
  for (const cmd of [buildDumpCommand((p) => (other = () => runDumpCommand(p, out))), buildLoadCommand((p) => (other = () => runLoadCommand(p, out)))]) {
    const name = cmd.name();
    program.addCommand(
      cmd
        .exitOverride()
        .showHelpAfterError(`(run "ferry ${name} --help" for usage)`)
        .configureOutput({ writeOut: (s) => out.stdout.write(s), writeErr: (s) => out.stderr.write(redactor.redact(s)) }),
    );
  }
  // `ferry worker` is the worker's own command line (src/worker/cli.ts), listed here for --help.
  program.command('worker').description('join a running `ferry sync --listen` as a worker: ferry worker --manager ws://HOST:PORT --token-file FILE (see ferry worker --help)');
  if (argv[0] === 'worker') {
    const { workerMain } = await import('../worker/cli.js');
    return workerMain(argv.slice(1), 'ferry worker');
  }
  // --json promises a summary on standard output whatever happens, a refused command line included.
  const wantsJson = argv[0] === 'sync' && argv.slice(0, end < 0 ? undefined : end).includes('--json');
  const failed = (code: number, message: string): number => {
    if (wantsJson) out.stdout.write(redactor.redact(JSON.stringify({ ...new SyncStats().toJSON(), exitCode: code, error: message })) + '\n');
    return code;
  };
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      // 'commander.help': help shown because no command was given — a usage error.
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return EXIT.ok;
      return failed(EXIT.usage, err.message);
    }
    out.stderr.write(redactor.redact(`ferry: error: ${messageOf(err)}\n`));
    return failed(err instanceof UsageError || err instanceof NotSupportedYetError ? EXIT.usage : EXIT.failed, messageOf(err));
  }
  if (other) return other();
  if (!parsed) return EXIT.usage;
  try {
    return await runSyncCommand(parsed, out);
  } catch (err) {
    out.stderr.write(redactor.redact(`ferry: error: ${messageOf(err)}\n`));
    return failed(err instanceof UsageError ? EXIT.usage : EXIT.failed, messageOf(err));
  }
}

// ---------------------------------------------------------------------------------------------
// ferry dump, ferry load

const DUMP_HELP = `
OUT's name chooses the format: .json and .json.gz write the metadata document
(docs/dump-format.md; --hash records content hashes too); .tar, .tar.gz (.tgz) and
.zip write an archive that carries the data. No OUT, or '-', writes JSON to standard
output: 'ferry dump A | ferry load B' copies a namespace. OUT may be any address
(a dump straight into a bucket); it appears whole or not at all. SRC is read as a
directory ('dir' and 'dir/' alike). Secrets read "removed" in the dump.

Exit status: 0 when every key was dumped, 1 when some could not be (each is named
on standard error), 2 for bad usage, 130 when interrupted (nothing is written), 141
when standard output's reader stopped reading (as 'ferry dump A | head' does).`;

const LOAD_HELP = `
IN is any address of a dump or archive, or '-' (the default) for standard input.
The whole input is checked first (format, version, duplicate names, a name that is
both file and directory, paths leaving DST, symlinks that would be written through,
sizes): when any of it is wrong, nothing is written.

From an archive (.tar, .tar.gz, .zip), data and attributes are restored into an
empty DST (--force merges into a non-empty one). From a JSON dump, directories
(empty ones too), symlinks, modes, owners and mtimes are restored where DST keeps
them, and every file is checked on DST: its size, and its hash when the dump has
one. Missing or different files are listed; --data ADDRESS copies them from a data
copy (e.g. the DR mirror 'ferry sync' keeps): a point-in-time restore from
"metadata dump + data copy". --verify is the restore drill: every check, nothing
written, a report of what a restore would miss.

Exit status: 0 when DST holds everything the dump describes, 1 when something is
missing, differs or failed (or the input is invalid), 2 for bad usage, 130 when
interrupted.`;

interface ParsedDump {
  src: string;
  out: string | undefined;
  format: DumpFormat;
  subdir?: string;
  hash?: 'md5' | 'sha256';
  threads: number;
  verbosity: Verbosity;
  statsInterval: number;
  noHttps: boolean;
}

interface ParsedLoad {
  dst: string;
  input: string;
  force: boolean;
  data?: string;
  verify: boolean;
  linksOutside: boolean;
  threads: number;
  format?: DumpFormat;
  verbosity: Verbosity;
  statsInterval: number;
  json: boolean;
  noHttps: boolean;
}

function verbosityOf(opts: Record<string, unknown>): Verbosity {
  if (opts['quiet'] === true && opts['verbose'] === true) throw new UsageError('--quiet and --verbose contradict each other');
  return opts['quiet'] === true ? 'quiet' : opts['verbose'] === true ? 'verbose' : 'normal';
}

/** The address syntax, for commands that take whole stores (dump, load): the lines on syntax alone. */
const SHORT_ADDRESS_HELP = ADDRESS_HELP.split('\n').slice(0, 9).join('\n');

function buildDumpCommand(onParsed: (p: ParsedDump) => void): Command {
  return new Command('dump')
    .description('Write a portable snapshot of SRC: a JSON metadata document, or an archive (tar, tar.gz, zip) that carries the data too.')
    .argument('<SRC>', 'the storage address to dump')
    .argument('[OUT]', "where to write the dump (any address, or '-' for standard output, the default)")
    .helpOption('-h, --help', 'show this help')
    .option('--subdir <PATH>', 'dump only this directory of SRC')
    .option('--format <FORMAT>', 'json, json.gz, tar, tar.gz or zip, whatever OUT is called')
    .addOption(new Option('--hash <ALGO>', 'record each file\'s content hash (reads every file)').choices(['md5', 'sha256']))
    .option('-p, --threads <N>', 'files read at once (archives, --hash)', int('--threads', 1), 10)
    .option('--no-https', 'use plain HTTP for object stores')
    .option('--stats-interval <SECONDS>', 'seconds between progress lines on standard error', atLeast('--stats-interval', 1), 5)
    .option('-v, --verbose', 'list every key dumped on standard error')
    .option('-q, --quiet', 'print errors only (no progress)')
    .addHelpText('after', DUMP_HELP + '\n' + SHORT_ADDRESS_HELP)
    .action((src: string, out: string | undefined, opts: Record<string, unknown>) => {
      const target = out === undefined || out === '-' ? undefined : out;
      onParsed({
        src,
        out: target,
        format: formatOf(target ?? '-', opts['format'] as string | undefined),
        ...(opts['subdir'] !== undefined ? { subdir: opts['subdir'] as string } : {}),
        ...(opts['hash'] !== undefined ? { hash: opts['hash'] as 'md5' | 'sha256' } : {}),
        threads: opts['threads'] as number,
        verbosity: verbosityOf(opts),
        statsInterval: opts['statsInterval'] as number,
        noHttps: opts['https'] === false,
      });
    });
}

function buildLoadCommand(onParsed: (p: ParsedLoad) => void): Command {
  return new Command('load')
    .description('Restore a dump (JSON or archive) into DST, after checking all of it; or, with --verify, check what a restore would miss.')
    .argument('<DST>', 'the storage address to restore into')
    .argument('[IN]', "the dump: any address, or '-' for standard input (the default)")
    .helpOption('-h, --help', 'show this help')
    .option('--force', 'restore an archive into a DST that is not empty, or over what a killed load left (files of the archive replace those of DST)')
    .option('--data <ADDRESS>', 'JSON dumps: copy files missing on DST (or different) from this data copy')
    .option('--verify', 'the restore drill: check everything, write nothing, report what a restore would miss')
    .option('--outside-links', 'restore symlinks whose target is absolute or leaves DST, as links (nothing is ever written through a symlink); without, such a link refuses the input')
    .option('-p, --threads <N>', 'files checked or copied at once', int('--threads', 1), 10)
    .addOption(new Option('--format <FORMAT>', 'the input\'s format, when its content should not decide').choices(['json', 'json.gz', 'tar', 'tar.gz', 'zip']))
    .option('--no-https', 'use plain HTTP for object stores')
    .option('--stats-interval <SECONDS>', 'seconds between progress lines on standard error', atLeast('--stats-interval', 1), 5)
    .option('--json', 'print the summary as one JSON object on standard output')
    .option('-v, --verbose', 'list every entry restored on standard error')
    .option('-q, --quiet', 'print errors only')
    .addHelpText('after', LOAD_HELP + '\n' + SHORT_ADDRESS_HELP)
    .action((dst: string, input: string | undefined, opts: Record<string, unknown>) => {
      onParsed({
        dst,
        input: input ?? '-',
        force: opts['force'] === true,
        ...(opts['data'] !== undefined ? { data: opts['data'] as string } : {}),
        verify: opts['verify'] === true,
        linksOutside: opts['outsideLinks'] === true,
        threads: opts['threads'] as number,
        ...(opts['format'] !== undefined ? { format: opts['format'] as DumpFormat } : {}),
        verbosity: verbosityOf(opts),
        statsInterval: opts['statsInterval'] as number,
        json: opts['json'] === true,
        noHttps: opts['https'] === false,
      });
    });
}

/** A tree to dump or load into: 'dir' is read as 'dir/' (a dump is of a directory, never of a key prefix). */
function asDirectory(input: string): Address {
  const a = parseAddress(input);
  return a.prefix !== '' && !a.prefix.endsWith('/') ? parseAddress(input + '/') : a;
}

/** The run's interruption: Ctrl-C (or SIGTERM) aborts the signal; the listeners go with `release`. */
function interruption(con: Console): { signal: AbortSignal; interrupted(): boolean; release(): void } {
  const stop = new AbortController();
  setMaxListeners(0, stop.signal);
  const onSignal = () => {
    if (!stop.signal.aborted) con.warn('interrupted: stopping');
    stop.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: stop.signal,
    interrupted: () => stop.signal.aborted,
    release: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

function exitOf(err: unknown): number {
  return err instanceof UsageError || err instanceof UnsupportedSchemeError || err instanceof NotSupportedYetError ? EXIT.usage : EXIT.failed;
}

/** A dump whose standard output's reader went away: 128 + SIGPIPE, as a shell reports such a process. */
const EXIT_BROKEN_PIPE = 141;

function isBrokenPipe(err: unknown): boolean {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) if (e.code === 'EPIPE') return true;
  return false;
}

async function runDumpCommand(p: ParsedDump, env: CliEnvironment): Promise<number> {
  const registry = env.registry ?? defaultRegistry();
  const redactor = new Redactor();
  const srcAddr = asDirectory(p.src);
  const outAddr = p.out === undefined ? undefined : parseAddress(p.out);
  for (const secret of [...secretsOf(srcAddr), ...(outAddr ? secretsOf(outAddr) : [])]) redactor.add(secret);
  const con = new Console(redactor, p.verbosity, env.stderr, Boolean(env.stderr.isTTY));
  const run = interruption(con);
  const started = performance.now();
  let source: ObjectStore | undefined;
  let target: ObjectStore | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    if (outAddr && (outAddr.prefix === '' || outAddr.prefix.endsWith('/'))) {
      throw new UsageError(`OUT ${JSON.stringify(outAddr.display)} names a directory or bucket: name the dump file, e.g. ${JSON.stringify(outAddr.display.replace(/\/?$/, '/dump.json.gz'))}`);
    }
    if (!outAddr && p.format !== 'json' && env.stdout.isTTY) {
      throw new UsageError(`a ${p.format} dump is binary: name OUT, or redirect standard output to a file`);
    }
    if (srcAddr.scheme === 'file') {
      // An object store has no directories to be missing; a local directory that is not there is a mistake, not an empty dump.
      const dir = srcAddr.bucket + srcAddr.prefix;
      const st = await stat(dir).catch(() => undefined);
      if (!st?.isDirectory()) throw new NotFoundError(`SRC ${JSON.stringify(srcAddr.display)} is not a directory (${dir} ${st ? 'is a file' : 'does not exist'})`);
    }
    source = await registry.open(srcAddr, { noHttps: p.noHttps, concurrency: p.threads });
    let counters: DumpCounters = emptyCounters();
    if (p.verbosity !== 'quiet') {
      timer = setInterval(() => con.info(`dumped ${describeCounters(counters)}, ${((performance.now() - started) / 1000).toFixed(0)}s`), (env.stderr.isTTY ? 1 : p.statsInterval) * 1000);
      timer.unref();
    }
    const options: DumpOptions = {
      format: p.format,
      ...(p.subdir !== undefined ? { subdir: p.subdir } : {}),
      ...(p.hash ? { hash: p.hash } : {}),
      setting: { source: addressWithoutSecrets(srcAddr), ...(p.subdir !== undefined ? { subdir: p.subdir } : {}), format: p.format, ferry: VERSION },
      threads: p.threads,
      signal: run.signal,
      onProgress: (c) => (counters = c),
      onWarning: (m) => con.warn(m),
      ...(p.verbosity === 'verbose' ? { onEntry: (e: DumpEntry) => con.info(e.path === '' ? '/' : e.type === 'dir' ? e.path + '/' : e.path) } : {}),
    };
    const { writeDump } = await import('./dump/dump.js');
    let result: DumpResult;
    if (!outAddr) {
      result = await writeDump(source, env.stdout, options);
    } else {
      target = await registry.open(outAddr, { noHttps: p.noHttps });
      // The store writes the dump whole or not at all (a file: a temporary name, renamed when complete).
      const body = new PassThrough({ highWaterMark: 1 << 20 });
      const putting = target.put('', body, { signal: run.signal });
      putting.catch((err: unknown) => body.destroy(err as Error));
      const [dumped] = await Promise.all([writeDump(source, body, options), putting]);
      result = dumped;
    }
    const seconds = (performance.now() - started) / 1000;
    const c = result.counters;
    if (c.files + c.dirs + c.symlinks === 0 && result.failed === 0) con.warn(`${srcAddr.display}${p.subdir ? ` (--subdir ${p.subdir})` : ''} holds nothing: the dump is empty`);
    con.info(`dumped ${describeCounters(result.counters)} of ${srcAddr.display}${p.subdir ? ` (--subdir ${p.subdir})` : ''} to ${outAddr?.display ?? 'standard output'} as ${p.format} in ${seconds.toFixed(1)}s${result.failed > 0 ? `; ${result.failed} keys could not be dumped (named above)` : ''}`);
    return result.failed > 0 ? EXIT.failed : EXIT.ok;
  } catch (err) {
    if (run.interrupted()) {
      con.error(`interrupted: ${outAddr ? `nothing was written to ${outAddr.display}` : 'the dump on standard output is incomplete (load refuses it)'}`);
      return EXIT.interrupted;
    }
    if (!outAddr && isBrokenPipe(err)) {
      // `ferry dump A | head`: the reader has what it wanted. Quiet, as a process a SIGPIPE ends.
      con.debug('standard output was closed by its reader: the dump stops there');
      return EXIT_BROKEN_PIPE;
    }
    con.error(messageOf(err));
    return exitOf(err);
  } finally {
    clearInterval(timer);
    run.release();
    await Promise.allSettled([source?.close?.(), target?.close?.()]);
  }
}

/** An address for a dump's header: every credential (access key, secret, token, password) reads "removed". */
function addressWithoutSecrets(a: Address): string {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)?([^/@]*)@/.exec(a.display);
  if (!m || a.scheme === 'file') return a.display;
  const userinfo = m[2] ?? '';
  const colon = userinfo.indexOf(':');
  // sftp and hdfs: the user name stays, a password goes; object stores: both keys go.
  const kept = a.scheme === 'sftp' || a.scheme === 'hdfs' ? (colon < 0 ? userinfo : userinfo.slice(0, colon) + ':removed') : colon < 0 ? 'removed' : 'removed:removed';
  return (m[1] ?? '') + kept + '@' + a.display.slice(m[0].length);
}

async function runLoadCommand(p: ParsedLoad, env: CliEnvironment): Promise<number> {
  const registry = env.registry ?? defaultRegistry();
  const redactor = new Redactor();
  const dstAddr = asDirectory(p.dst);
  const dataAddr = p.data === undefined ? undefined : asDirectory(p.data);
  for (const a of [dstAddr, dataAddr]) if (a) for (const secret of secretsOf(a)) redactor.add(secret);
  if (p.input !== '-') for (const secret of secretsOf(parseAddress(p.input))) redactor.add(secret);
  const con = new Console(redactor, p.verbosity, env.stderr, Boolean(env.stderr.isTTY));
  const run = interruption(con);
  const started = performance.now();
  let dst: ObjectStore | undefined;
  let data: ObjectStore | undefined;
  let input: LoadInput | undefined;
  let timer: NodeJS.Timeout | undefined;
  const summary = (code: number, report: LoadReport | undefined, error?: string): number => {
    if (p.json) {
      const { header: _header, ...rest } = report ?? ({} as Partial<LoadReport>);
      env.stdout.write(redactor.redact(JSON.stringify({ ...rest, seconds: +((performance.now() - started) / 1000).toFixed(3), exitCode: code, error: error ?? null })) + '\n');
    }
    return code;
  };
  try {
    const stdin = env.stdin ?? process.stdin;
    if (p.input === '-' && (stdin as { isTTY?: boolean }).isTTY) throw new UsageError('no IN given and standard input is a terminal: name the dump, or pipe one in (ferry dump SRC | ferry load DST)');
    dst = await registry.open(dstAddr, { noHttps: p.noHttps, concurrency: p.threads });
    if (dataAddr) data = await registry.open(dataAddr, { noHttps: p.noHttps, concurrency: p.threads });
    const { load, openLoadInput } = await import('./dump/load.js');
    input = await openLoadInput(p.input, registry, stdin as Readable, run.signal);
    let handled = 0;
    if (p.verbosity !== 'quiet') {
      timer = setInterval(() => con.info(`${p.verify ? 'checked' : 'loaded'} ${handled} entries, ${((performance.now() - started) / 1000).toFixed(0)}s`), (env.stderr.isTTY ? 1 : p.statsInterval) * 1000);
      timer.unref();
    }
    const options: LoadOptions = {
      force: p.force,
      ...(data ? { data } : {}),
      verify: p.verify,
      linksOutside: p.linksOutside,
      threads: p.threads,
      ...(p.format ? { format: p.format } : {}),
      name: input.name,
      signal: run.signal,
      log: con,
      onProgress: (n) => (handled = n),
      ...(p.verbosity === 'verbose' ? { onEntry: (e: DumpEntry) => con.debug(`${e.type === 'dir' ? e.path + '/' : e.path}`) } : {}),
    };
    const r = await load(dst, input.file, options);
    if (data && (r.format === 'tar' || r.format === 'tar.gz' || r.format === 'zip')) con.warn('--data is for JSON dumps: an archive carries its own data');
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const archive = r.format === 'tar' || r.format === 'tar.gz' || r.format === 'zip';
    const holds = `${input.name} (${r.format}) holds ${describeCounters(r.counters)}`;
    if (archive) {
      con.info(p.verify ? `checked ${holds}: it is valid; nothing was written (--verify)` : `restored ${holds} into ${dstAddr.display}: ${plural(r.files, 'file')} (${formatBytes(r.bytes)}), ${plural(r.dirs, 'directory', 'directories')} and ${plural(r.symlinks, 'symlink')} written, in ${seconds}s`);
    } else {
      const found = `${r.checked} files checked on ${dstAddr.display}: ${r.present} whole, ${r.missing} missing, ${r.different} different`;
      if (p.verify) {
        const fromData = data ? `; the data copy can supply ${r.restored} of them (${formatBytes(r.restoredBytes)})` : '';
        const miss = r.unrestored + r.wouldCreate > 0 ? `a restore would miss ${r.unrestored} files` : 'a restore would miss nothing';
        con.info(`restore drill of ${holds}: ${found}${fromData}; ${r.wouldCreate} directories or symlinks a restore would create; ${miss}; nothing was written (--verify)`);
      } else {
        const fromData = data ? `; restored ${r.restored} files (${formatBytes(r.restoredBytes)}) from ${dataAddr!.display}` : '';
        con.info(`loaded ${holds}: ${plural(r.dirs, 'directory', 'directories')} and ${plural(r.symlinks, 'symlink')} made; ${found}${fromData}; ${r.unrestored} files still missing or different, in ${seconds}s`);
      }
    }
    if (r.skipped > 0) con.warn(`${r.skipped} entries could not be restored: ${dstAddr.display} cannot hold them`);
    const bad = r.unrestored > 0 || r.failed > 0;
    if (bad && !p.verify && !archive && !data && r.unrestored > 0) con.info(`to copy the missing files from a data copy: ferry load --data ADDRESS ${p.dst} ${p.input}`);
    return summary(bad ? EXIT.failed : EXIT.ok, r, bad ? `${r.unrestored} files missing or different, ${r.failed} failed` : undefined);
  } catch (err) {
    if (run.interrupted()) {
      con.error('interrupted');
      return summary(EXIT.interrupted, undefined, 'interrupted');
    }
    con.error(messageOf(err));
    return summary(exitOf(err), undefined, messageOf(err));
  } finally {
    clearInterval(timer);
    run.release();
    await input?.close();
    await Promise.allSettled([dst?.close?.(), data?.close?.()]);
  }
}
