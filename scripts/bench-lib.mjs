// What the cluster and split benchmarks share: CPU and network counters from /proc and /sys, and a
// private copy of the build to benchmark.
import { cpSync, existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { build } from 'esbuild';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Machine-wide CPU jiffies (busy, total) from /proc/stat. */
export function cpuTotals() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3] + (f[4] ?? 0);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** CPU seconds (user + system) of a process (or, with a tid, one of its threads); with `children`, also its reaped children's. */
export function procCpu(pid, { children = false, tid } = {}) {
  try {
    const stat = readFileSync(tid ? `/proc/${pid}/task/${tid}/stat` : `/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    return (f[11] + f[12] + (children ? f[13] + f[14] : 0)) / 100; // USER_HZ
  } catch {
    return 0;
  }
}

export const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

/** Bytes a network device has sent or received (`what`: 'tx' or 'rx'); `missing` when it is gone. */
export function netBytes(dev, what, missing = 0) {
  try {
    return Number(readFileSync(`/sys/class/net/${dev}/statistics/${what}_bytes`, 'utf8'));
  } catch {
    return missing;
  }
}

/**
 * A private copy of bin/ and dist/ under .bench/<name>-<pid> (so node_modules still resolve), taken
 * while no rebuild is under way: the working tree is shared, and a rebuild in the middle of a
 * benchmark would break or change the runs. The worker deployed to the hosts comes from this copy too.
 */
export async function snapshotBuild(name) {
  const snap = join(root, '.bench', `${name}-${process.pid}`);
  const files = ['cli.js', 'worker.cjs', 'fs-thread.js'].map((f) => join(root, 'dist', f));
  const stamp = () => files.map((f) => (existsSync(f) ? `${statSync(f).mtimeMs}:${statSync(f).size}` : 'missing')).join(' ');
  for (let attempt = 0; attempt < 60; attempt++) {
    const before = stamp();
    if (!before.includes('missing')) {
      rmSync(snap, { recursive: true, force: true });
      try {
        cpSync(join(root, 'dist'), join(snap, 'dist'), { recursive: true });
        cpSync(join(root, 'bin'), join(snap, 'bin'), { recursive: true });
        if (stamp() === before) return snap;
      } catch {
        // a rebuild removed something as we copied: try again
      }
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  rmSync(snap, { recursive: true, force: true });
  throw new Error('dist/ kept changing (or is missing) for a minute: run `node scripts/build.mjs`, then the benchmark');
}

/**
 * Bundle a TypeScript helper of the benchmarks (scripts/NAME.ts: a test server, a fixture) to
 * .bench/OUT.mjs, inside the project so that its node_modules resolve (packages stay external).
 */
export async function bundleHelper(name, out = name) {
  const outfile = join(root, '.bench', `${out}.mjs`);
  await build({ entryPoints: [join(root, 'scripts', `${name}.ts`)], outfile, bundle: true, platform: 'node', format: 'esm', target: 'node20', logLevel: 'error', packages: 'external' });
  return outfile;
}

/**
 * What a timed ferry child (under /usr/bin/time, whose `TIME maxrss user sys` line ends its stderr)
 * left behind: its peak RSS (MB) and CPU seconds, its --json summary, and when workers joined and
 * the summary came (seconds from the start, from its timestamped stderr `lines`). Throws, with the
 * end of its stderr, when it failed, failed a key or lost one.
 */
export function finishedRun({ lines, out, code, argv, seconds }) {
  let rss;
  let managerCpu;
  const timeLine = lines.findLast((l) => l.text.startsWith('TIME '));
  if (timeLine) {
    const [, , m, u, s] = timeLine.text.split(' ');
    rss = Number(m) / 1024;
    managerCpu = Number(u) + Number(s);
  }
  let json;
  try {
    json = JSON.parse(out.trim().split('\n').pop() ?? '');
  } catch {
    json = undefined;
  }
  if (code !== 0 || !json || json.failed > 0 || json.lost > 0) {
    const stderr = lines.map((l) => l.text).join('\n');
    throw new Error(`ferry ${argv.join(' ')} failed (exit ${code}):\n${stderr.slice(-3000)}`);
  }
  const joins = lines.filter((l) => /^worker \S+ \[[^\]]+\] joined/.test(l.text)).map((l) => l.t);
  const summary = lines.find((l) => /^Found: \d+/.test(l.text))?.t ?? seconds;
  return {
    json,
    rss,
    managerCpu,
    joins,
    summary,
    copyPhase: joins.length ? summary - joins[0] : undefined,
    joinSpread: joins.length ? joins[joins.length - 1] - joins[0] : undefined,
  };
}
