// Workload (cluster): ferry's cluster mode (`--worker`) on separate hosts made on this machine —
// network namespaces on a bridge, each with its own sshd and, where asked, a tbf-capped link
// (test/support/hosts.ts) — and the project's s3 test server on the bridge address, which every
// host reaches over its own link (test/support/s3-server.ts). Both run in a child process
// (scripts/bench-cluster-setup.ts, bundled into .bench/) that removes everything when told to or
// when this process goes away (its standard input closes).
//
//   1. scale-out: s3 → s3 over links capped at 50 Mbit/s, 1, 2 and 3 workers, --no-manager-exec;
//   2. cluster-wide --bwlimit 40 with 1, 2 and 3 workers on uncapped links;
//   3. the cost of the cluster path: 10,000 × 4 KiB with two uncapped workers against one machine.
//
// ferry runs as a child process (the real CLI, as in test/e2e/cluster.test.ts) under
// /usr/bin/time; its standard error is timestamped line by line as it arrives, which is how the
// copy phase is measured (see COPY_PHASE).
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { bundleHelper, cpuTotals, finishedRun, loadavg, netBytes, procCpu, snapshotBuild } from './bench-lib.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const timeBin = existsSync('/usr/bin/time') ? '/usr/bin/time' : null;

const SCALE_OBJECTS = 96;
const SCALE_SIZE = 1 << 20;
const SCALE_CAP = 50; // Mbit/s, each host's link, both ways
const BWLIMIT = 40; // Mbit/s, the whole cluster
const SMALL_FILES = 10_000;
const SMALL_SIZE = 4096;
/** The whole cluster benchmark should take about this long; local → s3 (part 3) runs only if it fits. */
const BUDGET_SECONDS = 300;
const S3_PART_SECONDS = 50;

const COPY_PHASE =
  'copy phase = from the first "worker … joined" line on the manager\'s stderr to its summary line\n' +
  '  (so it includes the ramp-up of every worker and waits for late joiners; not deploy/SSH set-up)';

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};
const fmt = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '—');
const pct = (x) => `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)}%`;



export async function benchCluster({ work, runs, results = [], only = new Set() }) {
  const started = performance.now();
  console.log('\n(cluster) ferry --worker on hosts in network namespaces of this machine (test/support/hosts.ts)');
  const setupJs = join(root, '.bench', 'bench-cluster-setup.mjs');
  await bundleHelper('bench-cluster-setup', 'bench-cluster-setup');

  // ---- the fixture: 3 hosts with 50 Mbit/s links, the s3 test server on the bridge ----------
  const dir = join(work, 'cluster');
  mkdirSync(dir, { recursive: true });
  const fixture = spawn(process.execPath, ['--openssl-legacy-provider', setupJs, '3', String(SCALE_CAP)], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, TMPDIR: dir },
  });
  const fixtureExit = new Promise((resolve) => fixture.once('exit', resolve));
  const answers = createInterface({ input: fixture.stdout })[Symbol.asyncIterator]();
  const answer = async () => {
    const r = await answers.next();
    if (r.done) throw new Error('the cluster fixture exited');
    return JSON.parse(r.value);
  };
  const ask = async (o) => {
    fixture.stdin.write(JSON.stringify(o) + '\n');
    const a = await answer();
    if (a.error) throw new Error(`fixture ${o.cmd}: ${a.error}`);
    return a;
  };
  const live = new Set(); // ferry children, killed if we fail
  let snap;
  // Interrupted: stop our ferry runs and remove the build copy; the fixture sees its standard
  // input close when this process exits and removes the hosts and the s3 server's files itself.
  const onSignal = (sig) => {
    for (const c of live) c.kill('SIGKILL');
    if (snap) rmSync(snap, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true }); // as bench.mjs does when it ends
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  let fx;
  try {
    fx = await answer();
    if (fx.skipped) {
      console.log(`  skipped: ${fx.skipped}`);
      return;
    }
    if (fx.error) throw new Error(`cluster fixture: ${fx.error}`);
    snap = await snapshotBuild('ferry');
    const ferry = join(snap, 'bin', 'ferry.js');
    console.log(`  the build under test: a copy of dist/ taken at the start (worker.cjs ${fmt(statSync(join(snap, 'dist', 'worker.cjs')).size / 1e6, 1)} MB), so a concurrent rebuild cannot change it mid-run`);
    console.log(`  load average at the start: ${loadavg()} (this machine is shared: other processes show in the CPU figures)`);
    const hosts = fx.hosts;
    const s3dst = (b) => `s3://${fx.accessKey}:${fx.secretKey}@${fx.endpoint}/${b}/`;
    // The source is read with another access key: to ferry that is another account, so it does
    // not copy server-side (CopyObject) and every byte goes through an executor's link.
    const s3src = (b) => `s3://${fx.srcAccessKey}:${fx.srcSecretKey}@${fx.endpoint}/${b}/`;
    let bucketN = 0;
    const bucket = async (prefix) => {
      const name = `${prefix}-${++bucketN}`;
      await ask({ cmd: 'bucket', name });
      return name;
    };
    const workers = (n) => ['--worker', hosts.slice(0, n).map((h) => h.sshAddr).join(',')];

    /**
     * Run ferry once; resolves with its exit, stderr lines with their arrival times (s since the
     * start), the JSON summary, wall seconds, the manager's peak RSS and CPU seconds, the machine's
     * CPU use, the fixture's (≈ the s3 server's) CPU, and the bytes on the hosts' links.
     */
    const runFerry = (argv) =>
      new Promise((resolve, reject) => {
        const cmd = timeBin ? [timeBin, ['-f', 'TIME %e %M %U %S', process.execPath, ferry, ...argv]] : [process.execPath, [ferry, ...argv]];
        const cpu0 = cpuTotals();
        const fixCpu0 = procCpu(fixture.pid);
        // A host's sshd reaps its sessions, and they the workers: their CPU lands in its children's times.
        const hostCpu = () => hosts.reduce((n, h) => n + h.pids.reduce((m, p) => m + procCpu(p, { children: true }), 0), 0);
        const hostCpu0 = hostCpu();
        const net0 = hosts.map((h) => [netBytes(h.veth, 'tx'), netBytes(h.veth, 'rx')]);
        const start = performance.now();
        const child = spawn(cmd[0], cmd[1], {
          env: { PATH: process.env.PATH ?? '', HOME: fx.home, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        live.add(child);
        let out = '';
        let partial = '';
        const lines = [];
        // Bytes towards the hosts (veth tx: s3 GET bodies, …), sampled for the steady-state rate.
        const samples = [];
        const sample = () =>
          samples.push({ t: (performance.now() - start) / 1000, tx: hosts.reduce((n, h) => n + netBytes(h.veth, 'tx'), 0), rx: hosts.reduce((n, h) => n + netBytes(h.veth, 'rx'), 0) });
        const timer = setInterval(sample, 200);
        child.stdout.on('data', (d) => (out += d));
        child.stderr.setEncoding('utf8');
        child.stderr.on('data', (d) => {
          const t = (performance.now() - start) / 1000;
          const parts = (partial + d).split('\n');
          partial = parts.pop();
          for (const text of parts) lines.push({ t, text });
        });
        child.once('error', reject);
        child.once('close', (code) => {
          clearInterval(timer);
          sample();
          live.delete(child);
          if (partial) lines.push({ t: (performance.now() - start) / 1000, text: partial });
          const seconds = (performance.now() - start) / 1000;
          const cpu1 = cpuTotals();
          let run;
          try {
            run = finishedRun({ lines, out, code, argv, seconds });
          } catch (err) {
            reject(err);
            return;
          }
          const cores = (cpu1.total - cpu0.total) / 100 / seconds;
          resolve({
            ...run,
            seconds,
            lines,
            machineBusy: (cpu1.busy - cpu0.busy) / Math.max(1, cpu1.total - cpu0.total),
            /** CPU seconds of the whole machine in the run (all cores, everyone's). */
            machineCpu: (cpu1.busy - cpu0.busy) / 100,
            cores,
            fixtureCpu: procCpu(fixture.pid) - fixCpu0,
            workersCpu: hostCpu() - hostCpu0,
            netTx: hosts.reduce((n, h, i) => n + netBytes(h.veth, 'tx') - net0[i][0], 0),
            netRx: hosts.reduce((n, h, i) => n + netBytes(h.veth, 'rx') - net0[i][1], 0),
            samples,
          });
        });
      });

    /**
     * Bytes/s on the hosts' links between 10% and 90% of what crossed them in the run: `tx` is
     * towards the hosts (s3 GET bodies), `rx` from them (PUT bodies).
     */
    const steadyRate = (samples, dir = 'tx') => {
      if (samples.length < 3) return NaN;
      const base = samples[0][dir];
      const total = samples[samples.length - 1][dir] - base;
      const a = samples.find((s) => s[dir] - base >= 0.1 * total);
      const b = samples.find((s) => s[dir] - base >= 0.9 * total);
      return a && b && b.t > a.t ? (b[dir] - a[dir]) / (b.t - a.t) : NaN;
    };
    /** The highest rate (bytes/s) over any window of ≥ 1 s of samples. */
    const peakRate = (samples, dir = 'tx') => {
      let peak = 0;
      for (let i = 0, j = 0; i < samples.length; i++) {
        while (j < samples.length && samples[j].t - samples[i].t < 1) j++;
        if (j < samples.length) peak = Math.max(peak, (samples[j][dir] - samples[i][dir]) / (samples[j].t - samples[i].t));
      }
      return peak;
    };
    /** What used the CPU in a run, in CPU seconds, and what else ran on the machine meanwhile. */
    const cpuLine = (rs) => {
      const m = (f) => median(rs.map(f));
      const mine = (r) => (r.managerCpu ?? 0) + r.workersCpu + r.fixtureCpu;
      return (
        `CPU s: manager ${fmt(m((r) => r.managerCpu ?? NaN), 1)}, workers+their sshd ${fmt(m((r) => r.workersCpu), 1)}, s3 server ${fmt(m((r) => r.fixtureCpu), 1)};` +
        ` machine busy ${fmt(m((r) => r.machineBusy) * 100, 0)}% of ${fmt(m((r) => r.cores), 0)} cores, of which other processes ${fmt(m((r) => Math.max(0, r.machineCpu - mine(r)) / r.seconds / r.cores) * 100, 0)}%`
      );
    };

    // ---- data -----------------------------------------------------------------------------------
    const bigSrc = join(dir, 'big');
    mkdirSync(bigSrc, { recursive: true });
    const block = Buffer.alloc(SCALE_SIZE);
    for (let i = 0; i < block.length; i += 4) block.writeUInt32LE((i * 2654435761) >>> 0, i);
    for (let i = 0; i < SCALE_OBJECTS; i++) {
      block.writeUInt32LE(i, 0);
      writeFileSync(join(bigSrc, `obj${String(i).padStart(3, '0')}.bin`), block);
    }
    await ask({ cmd: 'bucket', name: 'src' });
    await runFerry(['sync', '--no-https', '-q', '--json', bigSrc + '/', s3dst('src')]);

    const small = join(dir, 'small');
    const data = Buffer.alloc(SMALL_SIZE, 97);
    for (let d = 0; d < 100; d++) {
      const sub = join(small, `dir${String(d).padStart(3, '0')}`);
      mkdirSync(sub, { recursive: true });
      for (let f = 0; f < SMALL_FILES / 100; f++) writeFileSync(join(sub, `file${String(f).padStart(4, '0')}.bin`), data);
    }

    // ---- 1. scale-out ---------------------------------------------------------------------------
    const MB = SCALE_OBJECTS * SCALE_SIZE / 1e6;
    console.log(`\n(cluster 1) scale-out: s3 → s3, ${SCALE_OBJECTS} objects × 1 MiB (${fmt(MB, 1)} MB), each host's link capped at ${SCALE_CAP} Mbit/s both ways (tbf),`);
    console.log('  --no-manager-exec (N = hosts); one s3 test server on the bridge (two buckets, two access keys so no server-side copy);');
    console.log(`  a fresh destination bucket per run; the worker was deployed to all ${hosts.length} hosts by a warm-up run first, so no upload is timed`);
    console.log(`  ${COPY_PHASE}`);
    // Warm-up: one run per host at once, each with its worker only (--no-manager-exec) and one
    // object, so each host's worker must start, hence be uploaded and cached, before the run ends.
    const cached = (h) => {
      try {
        return readdirSync(join(h.cacheDir, 'ferry')).some((d) => existsSync(join(h.cacheDir, 'ferry', d, 'worker.cjs')));
      } catch {
        return false;
      }
    };
    const w0 = performance.now();
    await Promise.all(hosts.map(async (h, i) => runFerry(['sync', '--no-https', '--json', '--no-manager-exec', '--limit', '1', '--worker', h.sshAddr, s3src('src'), s3dst(await bucket(`warm${i}`))])));
    const missing = hosts.filter((h) => !cached(h)).map((h) => h.name);
    if (missing.length) throw new Error(`the warm-up left no worker in the cache of ${missing.join(', ')}`);
    console.log(`  warm-up (worker uploaded to the ${hosts.length} hosts' caches, one run per host at once): ${fmt((performance.now() - w0) / 1000)} s`);
    const scale = [];
    for (let n = 1; n <= hosts.length; n++) {
      const rs = [];
      for (let i = 0; i < runs; i++) rs.push(await runFerry(['sync', '--no-https', '--json', '--no-manager-exec', ...workers(n), s3src('src'), s3dst(await bucket(`scale${n}`))]));
      for (const r of rs) {
        const used = r.json.executors.filter((e) => e.copiedObjects > 0).length;
        if (used !== n) console.log(`  note: a run with ${n} workers had ${used} executors copying`);
      }
      const phase = median(rs.map((r) => r.copyPhase));
      const row = {
        n,
        phase,
        mbps: median(rs.map((r) => r.json.copiedBytes / 1e6 / r.copyPhase)),
        wall: median(rs.map((r) => r.seconds)),
        wallMbps: median(rs.map((r) => r.json.copiedBytes / 1e6 / r.seconds)),
        steady: median(rs.map((r) => steadyRate(r.samples) / 1e6)),
        spread: median(rs.map((r) => r.joinSpread)),
        rss: Math.max(...rs.map((r) => r.rss ?? 0)),
        cpu: cpuLine(rs),
        split: rs[Math.floor(rs.length / 2)].json.executors.filter((e) => e.host !== 'manager').map((e) => e.copiedObjects).join('/'),
      };
      scale.push(row);
    }
    const one = scale[0];
    for (const r of scale) {
      const ratio = r.mbps / one.mbps;
      const target = 0.8 * r.n;
      console.log(
        `  ${r.n} worker${r.n > 1 ? 's' : ' '}  copy phase ${fmt(r.phase).padStart(6)} s  ${fmt(r.mbps).padStart(6)} MB/s (${fmt(r.mbps * 8, 1)} Mbit/s)` +
          `  ×${fmt(ratio)} of 1 worker${r.n > 1 ? ` (target ≥ ${fmt(target, 1)}: ${ratio >= target ? 'met' : `missed by ${fmt((1 - ratio / target) * 100, 0)}%`})` : ''}`,
      );
      console.log(
        `             wall ${fmt(r.wall).padStart(6)} s  ${fmt(r.wallMbps).padStart(6)} MB/s (×${fmt(r.wallMbps / one.wallMbps)})  joins spread ${fmt(r.spread)} s` +
          `  GET side of the links 10–90% ${fmt(r.steady)} MB/s  objects per worker ${r.split}`,
      );
      console.log(`             manager peak RSS ${fmt(r.rss, 0)} MB  ${r.cpu}`);
    }
    results.push({ workload: 'cluster scale-out', rows: scale });

    // ---- 2. cluster-wide --bwlimit --------------------------------------------------------------
    for (let i = 0; i < hosts.length; i++) await ask({ cmd: 'cap', host: i, mbit: 0 });
    const bwRuns = 1;
    console.log(`\n(cluster 2) --bwlimit ${BWLIMIT} (Mbit/s, whole cluster), s3 → s3, ${SCALE_OBJECTS} × 1 MiB (≈${fmt((MB * 8) / BWLIMIT, 0)} s at the limit), uncapped links, --no-manager-exec;`);
    console.log(`  ${bwRuns} run per worker count (a ~20 s run averages itself; --runs would make this part ${runs * 3 * 22} s); rate = copiedBytes / copy phase`);
    const bw = [];
    for (let n = 1; n <= hosts.length; n++) {
      const rs = [];
      for (let i = 0; i < bwRuns; i++) rs.push(await runFerry(['sync', '--no-https', '--json', '--no-manager-exec', '--bwlimit', String(BWLIMIT), ...workers(n), s3src('src'), s3dst(await bucket(`bw${n}`))]));
      const rate = median(rs.map((r) => (r.json.copiedBytes * 8) / 1e6 / r.copyPhase));
      const mbit = (f) => median(rs.map((r) => (f(r) * 8) / 1e6));
      const row = {
        n,
        rate,
        get: mbit((r) => steadyRate(r.samples, 'tx')),
        put: mbit((r) => steadyRate(r.samples, 'rx')),
        getPeak: mbit((r) => peakRate(r.samples, 'tx')),
        putPeak: mbit((r) => peakRate(r.samples, 'rx')),
        phase: median(rs.map((r) => r.copyPhase)),
        rss: Math.max(...rs.map((r) => r.rss ?? 0)),
        spread: median(rs.map((r) => r.joinSpread)),
      };
      bw.push(row);
      const dev = rate / BWLIMIT - 1;
      console.log(`  ${n} worker${n > 1 ? 's' : ' '}  ${fmt(rate, 1).padStart(5)} Mbit/s over ${fmt(row.phase, 1)} s (${pct(dev)}: ${Math.abs(dev) <= 0.1 ? 'within' : 'outside'} ±10%)  joins spread ${fmt(row.spread)} s  manager peak RSS ${fmt(row.rss, 0)} MB`);
      console.log(
        `             on the links (incl. HTTP/TCP): 10–90% window GET ${fmt(row.get, 1)} (${pct(row.get / BWLIMIT - 1)}), PUT ${fmt(row.put, 1)} (${pct(row.put / BWLIMIT - 1)}) Mbit/s;` +
          ` highest 1 s: GET ${fmt(row.getPeak, 0)}, PUT ${fmt(row.putPeak, 0)} Mbit/s`,
      );
    }
    results.push({ workload: 'cluster bwlimit', rows: bw });

    // ---- 3. the cost of the cluster path --------------------------------------------------------
    console.log(`\n(cluster 3) cost of the cluster path: ${SMALL_FILES.toLocaleString('en')} files of 4 KiB in 100 directories, uncapped links;`);
    console.log('  "one machine" = no --worker; "2 workers" = --worker h1,h2 --no-manager-exec (every task goes out over the WebSocket);');
    console.log('  "2 workers + manager" = the same with the manager executing too. local → local is legal here: every host shares');
    console.log("  this machine's file system at the same path (tmpfs). Wall time includes the SSH connection and worker start (warm cache)");
    const dst = join(dir, 'dst');
    const cleanDst = () => rmSync(dst, { recursive: true, force: true });
    const variants = [
      ['one machine', []],
      ['2 workers', ['--no-manager-exec', ...workers(2)]],
      ['2 workers + manager', workers(2)],
    ];
    const costRows = [];
    const cost = async (label, prepare, count, which) => {
      console.log(`  ${label}`);
      let base;
      for (const [name, extra] of which) {
        const rs = [];
        for (let i = 0; i < count; i++) {
          const target = await prepare();
          rs.push(await runFerry(['sync', '--no-https', '--json', ...extra, small + '/', target]));
        }
        for (const r of rs) if (r.json.copied !== SMALL_FILES) throw new Error(`${name}: copied ${r.json.copied}, not ${SMALL_FILES}`);
        const wall = median(rs.map((r) => r.seconds));
        const phase = rs[0].copyPhase === undefined ? undefined : median(rs.map((r) => r.copyPhase));
        const rss = Math.max(...rs.map((r) => r.rss ?? 0));
        const mcpu = median(rs.map((r) => r.managerCpu ?? NaN));
        const wcpu = median(rs.map((r) => r.workersCpu));
        base ??= wall;
        costRows.push({ workload: label, name, wall, phase, rss, managerCpu: mcpu, workersCpu: wcpu });
        console.log(
          `    ${name.padEnd(20)} ${fmt(wall, 3).padStart(7)} s wall ${wall === base ? '        ' : `(×${fmt(wall / base).padStart(5)})`}` +
            `  ${phase === undefined ? ''.padEnd(28) : `after the first join ${fmt(phase, 3).padStart(6)} s`}` +
            `  manager peak RSS ${fmt(rss, 0)} MB, CPU s: manager ${fmt(mcpu)}, workers ${fmt(wcpu)}, s3 server ${fmt(median(rs.map((r) => r.fixtureCpu)))}`,
        );
      }
    };
    await cost(
      `local → local (${runs} runs, medians)`,
      async () => {
        cleanDst();
        return dst + '/';
      },
      runs,
      variants,
    );
    // local → s3 takes 20–30 s a run against this server: one run of each of the first two, when
    // the ~5 minutes the benchmark should take allow it (or when asked: --only cluster,cluster-s3).
    const spent = (performance.now() - started) / 1000;
    if (only.has('cluster-s3') || spent + S3_PART_SECONDS <= BUDGET_SECONDS) {
      await cost('local → s3 test server (1 run each: 20–30 s a run)', async () => s3dst(await bucket('small')), 1, variants.slice(0, 2));
    } else {
      console.log(
        `  local → s3 test server: skipped, the cluster benchmark has run ${fmt(spent, 0)} s and this part takes ~${S3_PART_SECONDS} s more (budget ~${BUDGET_SECONDS} s;` +
          ` load average ${loadavg()}); --only cluster,cluster-s3 runs it anyway`,
      );
    }
    results.push({ workload: 'cluster cost', rows: costRows });
    console.log(`\n  cluster benchmark: ${fmt((performance.now() - started) / 1000, 0)} s (fixture and data included); load average at the end: ${loadavg()}`);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    for (const c of live) c.kill('SIGKILL');
    if (fixture.exitCode === null) {
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
    rmSync(dir, { recursive: true, force: true });
    if (snap) rmSync(snap, { recursive: true, force: true });
  }
}
