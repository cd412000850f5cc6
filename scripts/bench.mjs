#!/usr/bin/env node
// ferry's benchmark: the same workloads for ferry, rclone, cp and rsync in one run; medians,
// ratios and peak RSS. Not a test: it prints figures. Usage: npm run bench [-- --runs N --only a,b,c,d,e,s3,cluster,resume,split,dump]
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const runs = Number(arg('--runs', '3'));
const only = new Set(arg('--only', 'a,b,c,d,s3').split(','));
const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
const work = join(base, `ferry-bench-${process.pid}`);
const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const timeBin = existsSync('/usr/bin/time') ? '/usr/bin/time' : null;
const ferry = join(root, 'bin', 'ferry.js');
if (!existsSync(join(root, 'dist', 'cli.js'))) execFileSync('node', ['scripts/build.mjs'], { cwd: root, stdio: 'inherit' });

// Node.js 20 reads and parses every certificate of NODE_EXTRA_CA_CERTS when it starts, before any
// of a program's code runs: with a whole system bundle (some sandboxes and company machines set
// one) that is tens of milliseconds on each start. No workload here uses TLS: it is left out, and
// what it would have cost is said.
const extraCa = process.env.NODE_EXTRA_CA_CERTS;
delete process.env.NODE_EXTRA_CA_CERTS;
// rclone 1.60 refuses every S3 remote when AWS_CA_BUNDLE is set (PITFALLS.md).
const env = { ...process.env };
delete env.AWS_CA_BUNDLE;

/** Run a command; seconds of wall time and peak RSS in MB (when /usr/bin/time is there). */
function timed(cmd, argv, opts = {}) {
  const full = timeBin ? [timeBin, ['-f', '%e %M', cmd, ...argv]] : [cmd, argv];
  const t0 = performance.now();
  const r = spawnSync(full[0], full[1], { env: { ...env, ...(opts.env ?? {}) }, encoding: 'utf8', maxBuffer: 64 << 20 });
  const seconds = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed (${r.status}): ${r.stderr.slice(-2000)}`);
  let rss;
  if (timeBin) {
    const last = r.stderr.trim().split('\n').pop() ?? '';
    const m = /([\d.]+) (\d+)$/.exec(last);
    if (m) rss = Number(m[2]) / 1024;
  }
  return { seconds, rss };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

function measure(name, setup, cmd, argv, opts, count = runs) {
  const times = [];
  let rss = 0;
  for (let i = 0; i < count; i++) {
    setup();
    const r = timed(cmd, argv, opts);
    times.push(r.seconds);
    rss = Math.max(rss, r.rss ?? 0);
  }
  return { name, seconds: median(times), rss };
}

/**
 * The tools of one workload in turn (ferry, rclone, ..., ferry, rclone, ...), `runs` rounds; each
 * tool is [name, cmd, argv, opts?, setup?] (setup runs before each of its runs). Each row carries,
 * besides its median, its times, so that report() takes ferry's ratio to each peer round by round
 * (the median of those), which the machine's speed drifting does not move.
 */
function rounds(tools) {
  const rows = tools.map(([name]) => ({ name, times: [], rss: 0 }));
  for (let i = 0; i < runs; i++) {
    tools.forEach(([, cmd, argv, opts, setup], t) => {
      setup?.();
      const r = timed(cmd, argv, opts);
      rows[t].times.push(r.seconds);
      rows[t].rss = Math.max(rows[t].rss, r.rss ?? 0);
    });
  }
  return rows.map((r) => ({ ...r, seconds: median(r.times) }));
}

const results = [];
function report(workload, rows, unitCount, unitName) {
  const byName = Object.fromEntries(rows.map((r) => [r.name, r]));
  console.log(`\n${workload}`);
  for (const r of rows) {
    const rate = unitCount ? `  ${Math.round(unitCount / r.seconds).toLocaleString('en')} ${unitName}/s` : '';
    console.log(`  ${r.name.padEnd(8)} ${r.seconds.toFixed(3).padStart(8)} s${rate}${r.rss ? `  peak RSS ${r.rss.toFixed(0)} MB` : ''}`);
  }
  const f = byName.ferry;
  for (const p of rows) {
    if (!f || p === f) continue;
    const peer = p.name;
    const paired = f.times && p.times ? median(f.times.map((t, i) => t / p.times[i])) : undefined;
    console.log(`  ferry/${peer} = ${(paired ?? f.seconds / p.seconds).toFixed(2)}${paired === undefined ? '' : ' (median of the rounds\' ratios)'}`);
  }
  results.push({ workload, rows: rows.map(({ times: _times, ...r }) => r) });
}

function makeTree(dir, dirs, perDir, size) {
  const data = Buffer.alloc(size, 97);
  for (let d = 0; d < dirs; d++) {
    const sub = join(dir, `dir${String(d).padStart(3, '0')}`);
    mkdirSync(sub, { recursive: true });
    for (let f = 0; f < perDir; f++) writeFileSync(join(sub, `file${String(f).padStart(4, '0')}.bin`), data);
  }
}

/** `count` files of `size` bytes in `dirs` directories (1: all in `dir` itself). */
function makeMany(dir, dirs, count, size) {
  const data = Buffer.alloc(size, 98);
  const per = Math.ceil(count / dirs);
  for (let d = 0; d < dirs; d++) {
    const sub = dirs === 1 ? dir : join(dir, `d${String(d).padStart(3, '0')}`);
    mkdirSync(sub, { recursive: true });
    for (let f = 0; f < per && d * per + f < count; f++) writeFileSync(join(sub, `f${String(f).padStart(6, '0')}`), data);
  }
}

function makeBig(path, bytes) {
  mkdirSync(dirname(path), { recursive: true });
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(8 << 20);
  for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0, i);
  for (let off = 0; off < bytes; off += chunk.length) writeSync(fd, chunk, 0, Math.min(chunk.length, bytes - off));
  closeSync(fd);
}

const peers = { rclone: have('rclone'), cp: have('cp'), rsync: have('rsync') };
console.log(`ferry benchmark in ${work} (${base === '/dev/shm' ? 'tmpfs' : 'disk'}), ${runs} runs each, medians`);
{
  const start = (extra) => median(Array.from({ length: 5 }, () => timed('node', ['-e', '0'], { env: extra ? { NODE_EXTRA_CA_CERTS: extra } : {} }).seconds));
  const plain = start();
  const note = extraCa ? `; with this environment's NODE_EXTRA_CA_CERTS (${extraCa}) ${start(extraCa).toFixed(3)} s, which every Node.js run below is spared` : '';
  console.log(`Node.js ${process.version} starts and exits in ${plain.toFixed(3)} s${note}`);
}
console.log(`peers: ${Object.entries(peers).map(([k, v]) => `${k}${v ? '' : ' (missing)'}`).join(', ')}`);
mkdirSync(work, { recursive: true });
try {
  const small = join(work, 'small');
  const dst = join(work, 'dst');
  const clean = () => rmSync(dst, { recursive: true, force: true });
  if (only.has('a') || only.has('b')) {
    makeTree(small, 100, 100, 4096);
    if (only.has('a')) {
      const rows = [measure('ferry', clean, 'node', [ferry, 'sync', '-q', small + '/', dst + '/'])];
      if (peers.rclone) rows.push(measure('rclone', clean, 'rclone', ['sync', '--transfers', '10', small, dst]));
      if (peers.cp) rows.push(measure('cp', clean, 'cp', ['-a', small + '/.', dst + '/']));
      if (peers.rsync) rows.push(measure('rsync', clean, 'rsync', ['-a', small + '/', dst + '/']));
      report('(a) first sync: 10,000 files of 4 KiB in 100 directories', rows, 10000, 'files');
    }
    if (only.has('b')) {
      clean();
      execFileSync('cp', ['-a', small + '/.', dst + '/']);
      const tools = [['ferry', 'node', [ferry, 'sync', '-q', small + '/', dst + '/']]];
      if (peers.rclone) tools.push(['rclone', 'rclone', ['sync', '--transfers', '10', small, dst]]);
      if (peers.rsync) tools.push(['rsync', 'rsync', ['-a', small + '/', dst + '/']]);
      // What no Node.js program gets under: start, and read both trees' attributes (bench-floor.mjs).
      tools.push(['node', 'node', [join(root, 'scripts', 'bench-floor.mjs'), small, dst]]);
      const rows = rounds(tools);
      report('(b) no-op re-sync of the same 10,000 files ("node": Node.js starting and reading both trees, nothing more)', rows, 10000, 'files');
    }
  }
  if (only.has('e')) {
    // Listing at scale: a no-op re-sync of 200,000 files, once in one flat directory (the case that
    // holds a whole directory while it is sorted) and once as 200 directories of 1,000.
    for (const [label, dirs] of [['one flat directory', 1], ['200 directories × 1,000', 200]]) {
      const src = join(work, 'many');
      const copy = join(work, 'many-dst');
      rmSync(src, { recursive: true, force: true });
      rmSync(copy, { recursive: true, force: true });
      makeMany(src, dirs, 200_000, 100);
      execFileSync('cp', ['-a', src + '/.', copy + '/']);
      const tools = [['ferry', 'node', [ferry, 'sync', '-q', src + '/', copy + '/']]];
      if (peers.rclone) tools.push(['rclone', 'rclone', ['sync', '--transfers', '10', src, copy]]);
      const rows = rounds(tools);
      report(`(e) no-op re-sync of 200,000 files, ${label}`, rows, 200_000, 'files');
      rmSync(src, { recursive: true, force: true });
      rmSync(copy, { recursive: true, force: true });
    }
  }
  if (only.has('c')) {
    const bigDir = join(work, 'big');
    makeBig(join(bigDir, 'one.bin'), 1 << 30);
    const rows = [measure('ferry', clean, 'node', [ferry, 'sync', '-q', bigDir + '/', dst + '/'])];
    if (peers.rclone) rows.push(measure('rclone', clean, 'rclone', ['sync', '--transfers', '10', bigDir, dst]));
    if (peers.cp) rows.push(measure('cp', clean, 'cp', ['-a', bigDir + '/.', dst + '/']));
    report('(c) one 1 GiB file', rows, (1 << 30) / 1048576, 'MiB');
    rmSync(bigDir, { recursive: true, force: true });
  }
  if (only.has('d')) {
    const out = join(work, 'bench-diff.mjs');
    await build({ entryPoints: [join(root, 'scripts', 'bench-diff.ts')], outfile: out, bundle: true, platform: 'node', format: 'esm', target: 'node20', logLevel: 'warning' });
    const times = [];
    let rss = 0;
    let kps = [];
    for (let i = 0; i < runs; i++) {
      const r = JSON.parse(execFileSync('node', [out, '1000000'], { encoding: 'utf8' }).trim().split('\n').pop());
      times.push(r.seconds);
      kps.push(r.keysPerSecond);
      rss = Math.max(rss, r.peakRssMB);
    }
    console.log(`\n(d) mem → mem listing + diff of 1,000,000 equal keys (in process)`);
    console.log(`  ferry    ${median(times).toFixed(3).padStart(8)} s  ${median(kps).toLocaleString('en')} keys/s  peak RSS ${rss} MB (both stores included)`);
    results.push({ workload: 'd', rows: [{ name: 'ferry', seconds: median(times), keysPerSecond: median(kps), rss }] });
  }
  if (only.has('s3')) {
    const { benchS3 } = await import('./bench-s3.mjs');
    await benchS3({ work, ferry, runs, measure, report, peers });
  }
  if (only.has('dump')) {
    const { benchDump } = await import('./bench-dump.mjs');
    await benchDump({ work, ferry, runs, rounds, report, results });
  }
  if (only.has('resume')) {
    const { benchResume } = await import('./bench-resume.mjs');
    await benchResume({ work, ferry, runs, results });
  }
  if (only.has('cluster')) {
    // Not in the default set: needs root (network namespaces) and takes about 5 minutes
    // (cluster-s3 adds its local → s3 part even when that would take longer).
    const { benchCluster } = await import('./bench-cluster.mjs');
    await benchCluster({ work, runs, results, only });
  }
  if (only.has('split')) {
    // Not in the default set: needs root (network namespaces); one 2 GiB object by 1 and 3 workers
    // over capped links, about 5 minutes (development options in scripts/bench-split.mjs).
    const { benchSplit } = await import('./bench-split.mjs');
    await benchSplit({ work, runs, results, args });
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
if (arg('--json')) writeFileSync(arg('--json'), JSON.stringify(results, null, 2));
