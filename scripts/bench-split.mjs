// Workload (split): one large object (2 GiB) copied local → s3 test server as parts (--split-size)
// by 1 and by 3 workers, each worker a host in a network namespace whose link is capped (tbf), so
// that the links — not the one-process s3 test server, nor this machine's two cores — limit the
// copy. The fixture (hosts + the s3 test server on the bridge) is scripts/bench-cluster-setup.ts,
// run as a child process as in scripts/bench-cluster.mjs; it removes everything when told to or
// when this process goes away (its standard input closes).
//
//   source: one file on tmpfs (/dev/shm), which every namespace host sees at the same path;
//   runs:   ferry sync --no-manager-exec --split-size 64M --worker h1 (then h1,h2,h3), a fresh
//           bucket per run, the worker deployed to every host by a warm-up run first;
//   checks: the summary (1 copied, every byte, parts = tasks, all parts accounted), the object's
//           size after every run, its SHA-256 against the source's once;
//   prints: medians of the copy phase and the wall time, the ratio 3 vs 1 against the target, and
//           the evidence for it: the s3 test server's CPU, each link's rate, parts per worker.
//
// Options (after `npm run bench --`): --runs N (3; a configuration whose first run takes > 60 s
// runs once), --split-object SIZE (2G; smaller for development), --split-cap MBIT (100), --split-workers 1,3, --split-part SIZE (64M).
import { spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join, dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { bundleHelper, cpuTotals, finishedRun, loadavg, netBytes, procCpu, snapshotBuild } from './bench-lib.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const timeBin = existsSync('/usr/bin/time') ? '/usr/bin/time' : null;

const MiB = 1 << 20;
const DEFAULT_OBJECT = 2 * 1024 * MiB;
/**
 * Mbit/s, each host's link, both ways. At 100 the links carry 96% of the cap with 3 workers while
 * the machine is < 50% busy; at 150 (measured in development) they carried 86–89% with the machine
 * 95% busy, i.e. the CPU shared the bottleneck. The s3 test server's completion of the upload (it
 * joins the 2 GiB of parts, ~12 s) is the same at any cap: the slower the link, the smaller its share.
 */
const DEFAULT_CAP = 100;
const DEFAULT_SPLIT = '64M';
const TARGET = 2.4;
/** A configuration whose first run takes longer than this (wall) is run once. */
const LONG_RUN = 60;

const median = (xs) => {
  const s = [...xs].filter((x) => x !== undefined && !Number.isNaN(x)).sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
};
const fmt = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '—');
const pctOf = (x) => `${fmt(x * 100, 0)}%`;
function parseSize(s) {
  const m = /^(\d+(?:\.\d+)?)([KMG]?)i?B?$/i.exec(String(s).trim());
  if (!m) throw new Error(`not a size: ${s}`);
  return Math.round(Number(m[1]) * { '': 1, K: 1024, M: MiB, G: 1024 * MiB }[m[2].toUpperCase()]);
}
const human = (b) => (b >= 1024 * MiB && b % (1024 * MiB) === 0 ? `${b / 1024 / MiB} GiB` : `${fmt(b / MiB, b % MiB ? 1 : 0)} MiB`);



/**
 * A file of `size` bytes in which every 4 KiB carries its own offset, so that a part stored in the
 * wrong place, or twice, changes the digest (as test/e2e/split.test.ts does). Returns its SHA-256.
 */
async function writePatternFile(path, size) {
  const base = Buffer.alloc(MiB);
  for (let i = 0; i < MiB; i += 4) base.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ 0x5bd1e995) >>> 0, i);
  const h = createHash('sha256');
  const f = await open(path, 'w');
  try {
    const block = Buffer.alloc(MiB);
    for (let off = 0; off < size; off += MiB) {
      const n = Math.min(MiB, size - off);
      base.copy(block, 0, 0, n);
      for (let i = 0; i + 8 <= n; i += 4096) block.writeDoubleLE(off + i, i);
      const view = block.subarray(0, n);
      h.update(view);
      await f.write(view);
    }
  } finally {
    await f.close();
  }
  return h.digest('hex');
}

export async function benchSplit({ work, runs = 3, results = [], args = [] }) {
  const arg = (name, dflt) => {
    const i = args.indexOf(name);
    return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
  };
  const SIZE = parseSize(arg('--split-object', String(DEFAULT_OBJECT)));
  const CAP = Number(arg('--split-cap', String(DEFAULT_CAP)));
  // --split-size of the runs (64M: see below; another only to show what it changes, e.g. ferry's default 256M).
  const SPLIT_SIZE = arg('--split-part', DEFAULT_SPLIT);
  const SPLIT_BYTES = parseSize(SPLIT_SIZE);
  // Worker counts to run (development: e.g. --split-workers 3); the ratio compares the last with the first.
  const WORKERS = arg('--split-workers', '1,3').split(',').map(Number);
  if (WORKERS.some((n) => !(n >= 1 && n <= 3))) throw new Error('--split-workers takes counts of 1 to 3');
  if (!(SIZE > SPLIT_BYTES) || !(CAP > 0)) throw new Error(`--split-object must be above ${SPLIT_SIZE} and --split-cap a positive number of Mbit/s`);
  const PARTS = Math.ceil(SIZE / SPLIT_BYTES);
  const started = performance.now();
  console.log(`\n(split) one ${human(SIZE)} object, local (tmpfs) → s3 test server, as parts uploaded by 1 and by 3 workers (hosts in network namespaces)`);

  const setupJs = join(root, '.bench', `bench-split-setup-${process.pid}.mjs`);
  const dir = join(work, 'split');
  mkdirSync(dir, { recursive: true });
  const live = new Set(); // ferry children, killed if we fail
  let snap;
  let fixture;
  let fixtureExit;
  // Interrupted: stop our ferry runs, remove the build copy and the data; the fixture sees its
  // standard input close when this process exits and removes the hosts and the s3 server's files.
  const onSignal = (sig) => {
    for (const c of live) c.kill('SIGKILL');
    if (snap) rmSync(snap, { recursive: true, force: true });
    rmSync(setupJs, { force: true });
    rmSync(work, { recursive: true, force: true }); // as bench.mjs does when it ends
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    await bundleHelper('bench-cluster-setup', `bench-split-setup-${process.pid}`);
    // ---- the fixture: 3 hosts with capped links, the s3 test server on the bridge -------------
    fixture = spawn(process.execPath, ['--openssl-legacy-provider', setupJs, String(Math.max(...WORKERS)), String(CAP)], {
      stdio: ['pipe', 'pipe', 'inherit'],
      env: { ...process.env, TMPDIR: dir },
    });
    fixtureExit = new Promise((resolve) => fixture.once('exit', resolve));
    fixture.stdin.on('error', () => {}); // EPIPE when it has gone already (skipped, crashed): its exit says what matters
    const answers = createInterface({ input: fixture.stdout })[Symbol.asyncIterator]();
    const answer = async () => {
      const r = await answers.next();
      if (r.done) throw new Error('the fixture (scripts/bench-cluster-setup.ts) exited');
      return JSON.parse(r.value);
    };
    const ask = async (o) => {
      fixture.stdin.write(JSON.stringify(o) + '\n');
      const a = await answer();
      if (a.error) throw new Error(`fixture ${o.cmd}: ${a.error}`);
      return a;
    };

    const fx = await answer();
    if (fx.skipped) {
      console.log(`  skipped: ${fx.skipped}`);
      return;
    }
    if (fx.error) throw new Error(`fixture: ${fx.error}`);
    rmSync(setupJs, { force: true }); // loaded: no longer needed
    snap = await snapshotBuild('ferry-split');
    const ferry = join(snap, 'bin', 'ferry.js');
    const hosts = fx.hosts;

    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    const { S3Client, HeadObjectCommand, GetObjectCommand, DeleteObjectCommand } = await import('@aws-sdk/client-s3');
    const s3 = new S3Client({
      endpoint: `http://${fx.endpoint}`,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: fx.accessKey, secretAccessKey: fx.secretKey },
    });
    const s3dst = (b) => `s3://${fx.accessKey}:${fx.secretKey}@${fx.endpoint}/${b}/`;
    let bucketN = 0;
    const bucket = async (prefix) => {
      const name = `${prefix}-${++bucketN}`;
      await ask({ cmd: 'bucket', name });
      return name;
    };

    const mbps = CAP / 8; // MB/s a link carries at most (payload less, for TCP/IP and HTTP)
    console.log(`  each host's link capped at ${CAP} Mbit/s both ways (tbf on its veth pair; ${fmt(mbps, 2)} MB/s); 3 links = ${fmt((3 * CAP) / 8, 1)} MB/s into the s3 test server,`);
    console.log('  which is one Node.js process (s3rver) on the bridge of this 2-core machine: its CPU is measured and reported below;');
    const perWorker = Math.ceil(PARTS / 3);
    console.log(`  --split-size ${SPLIT_SIZE}: ${PARTS} parts of ${human(SPLIT_BYTES)}. A worker takes one part per thread (-p, 10) as soon as it asks, so with`);
    console.log(`  ≤ 10 parts (ferry's default 256M makes ${Math.ceil(SIZE / (256 * MiB))} of this object) the first worker to ask takes every part and 3 workers are no`);
    console.log(`  faster than 1; with ${PARTS} parts each of 3 workers gets ≥ ${Math.min(10, Math.floor(PARTS / 3))}, the busiest ${perWorker} (${fmt(PARTS / perWorker, 2)}× less than one worker's ${PARTS}),`);
    console.log(`  and the end, when not every link is busy, is one part (${fmt((SPLIT_BYTES / 1e6 / mbps) / 0.95, 1)} s on one link); parts stay far above S3's 5 MiB minimum`);
    if (PARTS <= 10) console.log(`  (this run: ${PARTS} parts ≤ 10: expect them all on one worker)`);
    console.log('  --no-manager-exec (N = hosts: the manager lists and dispatches, every byte goes over a capped link); a fresh bucket per run;');
    console.log('  copy phase = from the first "worker … joined" line on the manager\'s stderr to its summary line (ramp-up and the manager\'s');
    console.log('  CompleteMultipartUpload included; SSH set-up and worker start excluded); wall = the whole ferry process');
    console.log(`  the build under test: a copy of dist/ taken at the start (worker.cjs ${fmt(statSync(join(snap, 'dist', 'worker.cjs')).size / 1e6, 1)} MB)`);
    console.log(`  load average at the start: ${loadavg()} (this machine is shared: other processes show in the CPU figures)`);

    // ---- data -----------------------------------------------------------------------------------
    const src = join(dir, 'src');
    mkdirSync(src, { recursive: true });
    const key = 'big.bin';
    let t0 = performance.now();
    const srcSha = await writePatternFile(join(src, key), SIZE);
    console.log(`  source: ${join(src, key)} (${human(SIZE)}, tmpfs, the same path on every host), sha256 ${srcSha.slice(0, 16)}…, written in ${fmt((performance.now() - t0) / 1000, 1)} s`);
    const warmSrc = join(dir, 'warm');
    mkdirSync(warmSrc, { recursive: true });
    await writePatternFile(join(warmSrc, 'w.bin'), 12 * MiB);

    /**
     * Run ferry once; resolves with its JSON summary, stderr lines with their arrival times (s since
     * the start), wall seconds, the copy phase, the manager's peak RSS and CPU, and samples (every
     * 250 ms) of each link's bytes and of the s3 test server's CPU.
     */
    const runFerry = (argv) =>
      new Promise((resolve, reject) => {
        const cmd = timeBin ? [timeBin, ['-f', 'TIME %e %M %U %S', process.execPath, ferry, ...argv]] : [process.execPath, [ferry, ...argv]];
        const cpu0 = cpuTotals();
        // A host's sshd reaps its sessions, and they the workers: their CPU lands in its children's times.
        const hostCpu = () => hosts.reduce((n, h) => n + h.pids.reduce((m, p) => m + procCpu(p, { children: true }), 0), 0);
        const hostCpu0 = hostCpu();
        const start = performance.now();
        const samples = [];
        // rx on the root end of a host's veth = bytes from the host (the PUT bodies of its parts).
        const sample = () =>
          samples.push({
            t: (performance.now() - start) / 1000,
            rx: hosts.map((h) => netBytes(h.veth, 'rx', NaN)),
            tx: hosts.map((h) => netBytes(h.veth, 'tx', NaN)),
            s3: procCpu(fixture.pid),
            s3main: procCpu(fixture.pid, { tid: fixture.pid }),
            machine: cpuTotals(),
          });
        sample();
        const child = spawn(cmd[0], cmd[1], {
          env: { PATH: process.env.PATH ?? '', HOME: fx.home, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        live.add(child);
        const timer = setInterval(sample, 250);
        let out = '';
        let partial = '';
        const lines = [];
        child.stdout.on('data', (d) => (out += d));
        child.stderr.setEncoding('utf8');
        child.stderr.on('data', (d) => {
          const t = (performance.now() - start) / 1000;
          const parts = (partial + d).split('\n');
          partial = parts.pop();
          for (const text of parts) lines.push({ t, text });
        });
        child.once('error', reject);
        child.once('close', async (code) => {
          clearInterval(timer);
          sample();
          live.delete(child);
          const seconds = (performance.now() - start) / 1000;
          if (partial) lines.push({ t: seconds, text: partial });
          const cpu1 = cpuTotals();
          let run;
          try {
            run = finishedRun({ lines, out, code, argv, seconds });
          } catch (err) {
            reject(err);
            return;
          }
          // The workers end after the manager: wait (≤ 3 s) until the hosts run their sshd only, so their CPU is reaped.
          for (let i = 0; i < 30; i++) {
            const extra = hosts.some((h) => {
              try {
                return execFileSync('/usr/sbin/ip', ['netns', 'pids', h.netns], { encoding: 'utf8' }).split(/\s+/).filter(Boolean).length > h.pids.length;
              } catch {
                return false;
              }
            });
            if (!extra) break;
            await new Promise((r) => setTimeout(r, 100));
          }
          resolve({
            ...run,
            seconds,
            lines,
            workersCpu: hostCpu() - hostCpu0,
            fixtureCpu: samples[samples.length - 1].s3 - samples[0].s3,
            machineCpu: (cpu1.busy - cpu0.busy) / 100,
            machineBusy: (cpu1.busy - cpu0.busy) / Math.max(1, cpu1.total - cpu0.total),
            cores: (cpu1.total - cpu0.total) / 100 / seconds,
            samples,
          });
        });
      });

    /** The object as the s3 test server has it: its size, and (with `hash`) its SHA-256, read back through the S3 API. */
    const stored = async (b, hash) => {
      const head = await s3.send(new HeadObjectCommand({ Bucket: b, Key: key }));
      if (!hash) return { size: head.ContentLength };
      const r = await s3.send(new GetObjectCommand({ Bucket: b, Key: key }));
      const h = createHash('sha256');
      for await (const c of r.Body) h.update(c);
      return { size: head.ContentLength, sha: h.digest('hex') };
    };

    // ---- warm-up: the worker goes to every host's cache ---------------------------------------
    // One run per host at once, each with its worker only (--no-manager-exec) and a 12 MiB file in
    // parts of 5 MiB, so each host's worker must start (hence be uploaded and cached) and copy parts.
    const cached = (h) => {
      try {
        return readdirSync(join(h.cacheDir, 'ferry')).some((d) => existsSync(join(h.cacheDir, 'ferry', d, 'worker.cjs')));
      } catch {
        return false;
      }
    };
    t0 = performance.now();
    const warm = await Promise.all(
      hosts.map(async (h, i) => runFerry(['sync', '--no-https', '--json', '--no-manager-exec', '--split-size', '5M', '--worker', h.sshAddr, warmSrc + '/', s3dst(await bucket(`warm${i}`))])),
    );
    const missing = hosts.filter((h) => !cached(h)).map((h) => h.name);
    if (missing.length) throw new Error(`the warm-up left no worker in the cache of ${missing.join(', ')}`);
    const warmParts = warm.map((r) => r.json.executors.reduce((n, e) => n + (e.parts ?? 0), 0));
    if (warmParts.some((p) => p !== 3)) throw new Error(`the warm-up runs were not split into 3 parts each (parts: ${warmParts.join(', ')})`);
    console.log(`  warm-up: the worker uploaded to the ${hosts.length} host${hosts.length > 1 ? 's' : ''}' caches (one run per host at once, a 12 MiB file in 3 parts each): ${fmt((performance.now() - t0) / 1000, 1)} s`);

    // ---- the runs -------------------------------------------------------------------------------
    /** Evidence from one run's samples, over its copy phase [from, to] (s since its start). */
    const analyse = (r, n) => {
      const from = r.joins[0] ?? 0;
      const to = r.summary;
      const S = r.samples;
      const at = (t) => S.reduce((best, s) => (Math.abs(s.t - t) < Math.abs(best.t - t) ? s : best), S[0]);
      const a = at(from);
      const b = at(to);
      const span = Math.max(1e-3, b.t - a.t);
      const used = hosts.slice(0, n);
      // Per link: bytes in the copy phase, when it carried traffic (> 20% of the cap over a sample), its rate then.
      const links = used.map((h, i) => {
        let first;
        let last;
        for (let k = 1; k < S.length; k++) {
          const rate = (S[k].rx[i] - S[k - 1].rx[i]) / (S[k].t - S[k - 1].t);
          if (rate > 0.2 * mbps * 1e6) {
            first ??= S[k - 1].t;
            last = S[k].t;
          }
        }
        const bytes = b.rx[i] - a.rx[i];
        const busy = first !== undefined ? last - first : NaN;
        const busyBytes = first !== undefined ? at(last).rx[i] - at(first).rx[i] : 0;
        return { host: h.name, bytes, avg: bytes / span, busy, busyRate: busyBytes / busy, first, last };
      });
      // The s3 test server's CPU: average over the copy phase, and the highest over any 2 s window (in cores).
      let peak = 0;
      let peakMain = 0;
      for (let i = 0, j = 0; i < S.length; i++) {
        while (j < S.length && S[j].t - S[i].t < 2) j++;
        if (j < S.length) {
          peak = Math.max(peak, (S[j].s3 - S[i].s3) / (S[j].t - S[i].t));
          peakMain = Math.max(peakMain, (S[j].s3main - S[i].s3main) / (S[j].t - S[i].t));
        }
      }
      const lastByte = Math.max(...links.map((l) => l.last ?? 0));
      const c = at(lastByte);
      const machine = (b.machine.busy - a.machine.busy) / Math.max(1, b.machine.total - a.machine.total);
      return {
        links,
        s3Avg: (b.s3 - a.s3) / span,
        s3MainAvg: (b.s3main - a.s3main) / span,
        s3Peak: peak,
        s3MainPeak: peakMain,
        machine,
        // After the last byte on the links: the manager completes the upload (the s3 test server joins the parts).
        tail: to - lastByte,
        tailS3: (b.s3 - c.s3) / Math.max(1e-3, b.t - c.t),
        tailS3Main: (b.s3main - c.s3main) / Math.max(1e-3, b.t - c.t),
        // The parts' phase: from the first join to the last byte on the links.
        upload: lastByte - from,
        // Time from the first link going quiet to the last (the part imbalance at the end).
        spread: Math.max(...links.map((l) => l.last ?? 0)) - Math.min(...links.map((l) => l.last ?? Infinity)),
      };
    };

    const rows = [];
    let shaChecked = false;
    for (const n of WORKERS) {
      const rs = [];
      let count = runs;
      for (let i = 0; i < count; i++) {
        const b = await bucket(`split${n}`);
        const r = await runFerry(['sync', '--no-https', '--json', '--no-manager-exec', '--split-size', SPLIT_SIZE, '--worker', hosts.slice(0, n).map((h) => h.sshAddr).join(','), src + '/', s3dst(b)]);
        // ---- is the result right? ----
        const j = r.json;
        const ex = j.executors.filter((e) => e.host !== 'manager');
        const parts = ex.reduce((m, e) => m + (e.parts ?? 0), 0);
        const problems = [];
        if (j.copied !== 1 || j.copiedBytes !== SIZE) problems.push(`copied ${j.copied} object(s), ${j.copiedBytes} bytes (expected 1, ${SIZE})`);
        if (parts !== PARTS) problems.push(`${parts} parts uploaded (expected ${PARTS}: was the object split?)`);
        if (ex.some((e) => e.tasks !== e.parts)) problems.push(`tasks ≠ parts: ${ex.map((e) => `${e.host} ${e.tasks}/${e.parts}`).join(', ')}`);
        const manager = j.executors.find((e) => e.host === 'manager');
        if (manager && manager.tasks > 0) problems.push(`the manager executed ${manager.tasks} task(s) despite --no-manager-exec`);
        if (r.joins.length !== n) problems.push(`${r.joins.length} worker(s) joined, not ${n}`);
        const hash = n === WORKERS[WORKERS.length - 1] && !shaChecked;
        const obj = await stored(b, hash);
        if (obj.size !== SIZE) problems.push(`the stored object has ${obj.size} bytes, not ${SIZE}`);
        if (hash) {
          shaChecked = true;
          if (obj.sha !== srcSha) problems.push(`the stored object's sha256 ${obj.sha} is not the source's ${srcSha}`);
        }
        if (problems.length) throw new Error(`${n} worker(s), run ${i + 1}: ${problems.join('; ')}\n${r.lines.map((l) => l.text).join('\n').slice(-3000)}`);
        // Free the tmpfs: the next run has a bucket of its own.
        await s3.send(new DeleteObjectCommand({ Bucket: b, Key: key }));
        r.ev = analyse(r, n);
        const hostName = (addr) => hosts.find((h) => h.sshAddr === addr || h.sshAddr === `root@${addr}`)?.name ?? addr;
        r.parts = ex.map((e) => `${hostName(e.host)} ${e.parts}`).sort();
        rs.push(r);
        console.log(
          `  ${n} worker${n > 1 ? 's' : ' '} run ${i + 1}: copy phase ${fmt(r.copyPhase)} s, wall ${fmt(r.seconds)} s; size ${obj.size} ok${hash ? ', sha256 = source ok' : ''};` +
            ` parts ${r.parts.join(', ')}; parts phase ${fmt(r.ev.upload, 1)} s + completion ${fmt(r.ev.tail, 1)} s; s3 server ${pctOf(r.ev.s3Avg)} of a core (peak ${pctOf(r.ev.s3Peak)})`,
        );
        if (i === 0 && r.seconds > LONG_RUN && count > 1) {
          count = 1;
          console.log(`    (this run took ${fmt(r.seconds, 0)} s > ${LONG_RUN} s: 1 run of ${n} worker${n > 1 ? 's' : ''}, not ${runs})`);
        }
      }
      const mid = [...rs].sort((x, y) => x.copyPhase - y.copyPhase)[Math.floor(rs.length / 2)];
      rows.push({
        n,
        runs: rs.length,
        phase: median(rs.map((r) => r.copyPhase)),
        wall: median(rs.map((r) => r.seconds)),
        rate: median(rs.map((r) => r.json.copiedBytes / 1e6 / r.copyPhase)),
        wallRate: median(rs.map((r) => r.json.copiedBytes / 1e6 / r.seconds)),
        spread: median(rs.map((r) => r.joinSpread)),
        rss: Math.max(...rs.map((r) => r.rss ?? 0)),
        managerCpu: median(rs.map((r) => r.managerCpu)),
        workersCpu: median(rs.map((r) => r.workersCpu)),
        s3Avg: median(rs.map((r) => r.ev.s3Avg)),
        s3MainAvg: median(rs.map((r) => r.ev.s3MainAvg)),
        s3Peak: Math.max(...rs.map((r) => r.ev.s3Peak)),
        s3MainPeak: Math.max(...rs.map((r) => r.ev.s3MainPeak)),
        machine: median(rs.map((r) => r.ev.machine)),
        // What the machine's CPU did in the whole run that was not ferry's or the s3 server's (other users' work, kernel threads).
        others: median(rs.map((r) => Math.max(0, r.machineCpu - (r.managerCpu ?? 0) - r.workersCpu - r.fixtureCpu) / r.seconds / r.cores)),
        tail: median(rs.map((r) => r.ev.tail)),
        tailS3: median(rs.map((r) => r.ev.tailS3)),
        tailS3Main: median(rs.map((r) => r.ev.tailS3Main)),
        upload: median(rs.map((r) => r.ev.upload)),
        linkSpread: median(rs.map((r) => r.ev.spread)),
        mid,
      });
    }

    // ---- report ---------------------------------------------------------------------------------
    const one = rows[0];
    const ideal = (n) => {
      // Link-bound copy time: the busiest worker's parts at the cap (TCP/IP + HTTP cost ~5%), plus nothing else.
      const busiest = Math.min(SIZE, Math.ceil(PARTS / n) * SPLIT_BYTES);
      return busiest / 1e6 / (mbps * 0.95);
    };
    console.log(`\n  medians (${rows.map((r) => `${r.n} worker${r.n > 1 ? 's' : ''}: ${r.runs} run${r.runs > 1 ? 's' : ''}`).join(', ')}):`);
    for (const r of rows) {
      console.log(
        `  ${r.n} worker${r.n > 1 ? 's' : ' '}  copy phase ${fmt(r.phase).padStart(7)} s  ${fmt(r.rate).padStart(6)} MB/s (${fmt(r.rate * 8, 0)} Mbit/s)` +
          `   wall ${fmt(r.wall).padStart(7)} s  ${fmt(r.wallRate).padStart(6)} MB/s   link-bound ≈ ${fmt(ideal(r.n), 1)} s`,
      );
      const links = r.mid.ev.links
        .map((l) => (l.first === undefined ? `${l.host} idle` : `${l.host} ${fmt(l.busyRate / 1e6)} MB/s for ${fmt(l.busy, 1)} s (${fmt(l.bytes / 1e6, 0)} MB)`))
        .join(', ');
      console.log(`             parts per worker: ${r.mid.parts.join(', ')} (tasks = parts); links, bytes from the hosts while busy: ${links}`);
      console.log(
        `             s3 test server CPU over the copy phase: ${pctOf(r.s3Avg)} of a core (main thread ${pctOf(r.s3MainAvg)}), highest 2 s: ${pctOf(r.s3Peak)} (main thread ${pctOf(r.s3MainPeak)});` +
          ` parts phase (first join → last byte on the links) ${fmt(r.upload, 1)} s,` +
          ` then ${fmt(r.tail, 1)} s to the summary (CompleteMultipartUpload: the s3 test server joins the parts, at ${pctOf(r.tailS3)} of a core, main thread ${pctOf(r.tailS3Main)})${r.n > 1 ? `; links went quiet ${fmt(r.linkSpread, 1)} s apart` : ''}`,
      );
      console.log(
        `             CPU s: manager ${fmt(r.managerCpu, 1)}, workers+their sshd ${fmt(r.workersCpu, 1)}; machine busy ${pctOf(r.machine)} of 2 cores in the copy phase` +
          ` (in the whole run, ${pctOf(r.others)} of the 2 cores went to other processes);` +
          ` manager peak RSS ${fmt(r.rss, 0)} MB${r.n > 1 ? `; joins spread ${fmt(r.spread, 2)} s` : ''}`,
      );
    }
    const summaryRows = rows.map((r) => ({ n: r.n, runs: r.runs, phase: r.phase, wall: r.wall, rate: r.rate, wallRate: r.wallRate, upload: r.upload, tail: r.tail, s3Avg: r.s3Avg, s3Peak: r.s3Peak, parts: r.mid.parts }));
    const last = rows[rows.length - 1];
    if (last !== one) {
      const ratio = one.phase / last.phase;
      const wallRatio = one.wall / last.wall;
      console.log(
        `\n  ${last.n} workers vs 1: ×${fmt(ratio)} (copy phase), ×${fmt(wallRatio)} (wall); target ≥ ${TARGET}: ` +
          (ratio >= TARGET ? 'met' : `missed by ${fmt((1 - ratio / TARGET) * 100, 0)}% (×${fmt(ratio)} of ×${TARGET})`) +
          `; link-bound ceiling ×${fmt(ideal(1) / ideal(last.n))}`,
      );
      const uploadRatio = one.upload / last.upload;
      console.log(`  parts phase alone (without the s3 test server's ${fmt(one.tail, 1)} s / ${fmt(last.tail, 1)} s completing the upload): ×${fmt(uploadRatio)}`);
      summaryRows.push({ ratio, wallRatio, uploadRatio, target: TARGET });
    }
    const saturated = rows.filter((r) => r.s3MainPeak >= 0.9);
    if (saturated.length) {
      console.log(`  note: the s3 test server's main thread reached ${saturated.map((r) => `${pctOf(r.s3MainPeak)} of a core over 2 s with ${r.n} worker${r.n > 1 ? 's' : ''}`).join(', ')}: it may limit the copy`);
    }
    results.push({ workload: `split ${human(SIZE)} local → s3, ${CAP} Mbit/s links`, rows: summaryRows });
    console.log(`\n  split benchmark: ${fmt((performance.now() - started) / 1000, 0)} s (fixture and data included); load average at the end: ${loadavg()}`);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    for (const c of live) c.kill('SIGKILL');
    if (fixture && fixture.exitCode === null) {
      try {
        fixture.stdin.write(JSON.stringify({ cmd: 'close' }) + '\n');
      } catch {
        // gone
      }
      fixture.stdin.end();
      const timeout = setTimeout(() => fixture.kill('SIGKILL'), 30_000);
      await fixtureExit;
      clearTimeout(timeout);
    }
    rmSync(setupJs, { force: true });
    rmSync(dir, { recursive: true, force: true });
    if (snap) rmSync(snap, { recursive: true, force: true });
  }
}

// Run on its own: node scripts/bench-split.mjs [--runs N] [--split-object SIZE] [--split-cap MBIT]
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const i = args.indexOf('--runs');
  const work = join(existsSync('/dev/shm') ? '/dev/shm' : '/tmp', `ferry-bench-${process.pid}`);
  mkdirSync(work, { recursive: true });
  try {
    await benchSplit({ work, runs: i >= 0 ? Number(args[i + 1]) : 3, args });
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
