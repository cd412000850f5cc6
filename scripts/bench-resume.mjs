// Workload (resume): 20,000 files of 4 KiB in 200 directories, local → local on tmpfs. A run with
// --enable-checkpoint is killed with SIGKILL when half the files are copied; then the same command
// again, and the time it spends before it copies its first new file is measured — against the same
// rerun without a checkpoint (which lists and compares everything from the first key). The kill
// point is found from the progress lines (--stats-interval 1) and the run is slowed by --bwlimit,
// so that "half" is hit within a second.
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync, cpSync } from 'node:fs';
import { join } from 'node:path';

const FILES = 20_000;
const DIRS = 200;

function makeSource(dir) {
  const data = Buffer.alloc(4096, 97);
  for (let d = 0; d < DIRS; d++) {
    const sub = join(dir, `d${String(d).padStart(3, '0')}`);
    mkdirSync(sub, { recursive: true });
    for (let f = 0; f < FILES / DIRS; f++) writeFileSync(join(sub, `f${String(f).padStart(3, '0')}`), data);
  }
}

/** Run ferry; resolve when `until(stderrSoFar)` holds (then SIGKILL) or when it exits. */
function run(ferry, args, until) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [ferry, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    let firstCopy;
    child.stderr.on('data', (d) => {
      err += d;
      if (firstCopy === undefined && /^copied /m.test(err)) firstCopy = (performance.now() - t0) / 1000;
      if (until && until(err)) child.kill('SIGKILL');
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      let summary;
      try {
        summary = JSON.parse(out.trim().split('\n').pop());
      } catch {
        summary = undefined;
      }
      resolve({ code, signal, seconds: (performance.now() - t0) / 1000, firstCopy, err, summary });
    });
  });
}

export async function benchResume({ work, ferry, runs, results }) {
  const src = join(work, 'resume-src');
  makeSource(src);
  const rows = [];
  for (let i = 0; i < runs; i++) {
    const dst = join(work, `resume-dst-${i}`);
    rmSync(dst, { recursive: true, force: true });
    const args = ['sync', '--enable-checkpoint', '--checkpoint-interval', '1s', '--stats-interval', '1', src + '/', dst + '/'];
    // Half-way: the last progress line says at least FILES / 2 copied, and a checkpoint since.
    const half = (err) => {
      const m = [...err.matchAll(/copied: (\d+)/g)].pop();
      return m !== undefined && Number(m[1]) >= FILES / 2;
    };
    const killed = await run(ferry, [...args, '--bwlimit', '40'], half);
    if (killed.signal !== 'SIGKILL') throw new Error(`the first run was not killed half-way (exit ${killed.code}): ${killed.err.slice(-500)}`);
    // The same state twice: one rerun with the checkpoint, one without (a copy of the destination, checkpoint removed).
    const plain = join(work, `resume-plain-${i}`);
    rmSync(plain, { recursive: true, force: true });
    cpSync(dst, plain, { recursive: true });
    rmSync(join(plain, '.ferry'), { recursive: true, force: true });
    const resumed = await run(ferry, [...args, '-v', '--json'], undefined);
    const again = await run(ferry, ['sync', '-v', '--json', src + '/', plain + '/'], undefined);
    if (resumed.code !== 0 || again.code !== 0) throw new Error(`a rerun failed: ${resumed.err.slice(-500)} ${again.err.slice(-500)}`);
    rows.push({
      resumedFirst: resumed.firstCopy,
      resumedAll: resumed.seconds,
      resumedListed: resumed.summary.found,
      plainFirst: again.firstCopy,
      plainAll: again.seconds,
      plainListed: again.summary.found,
      copied: resumed.summary.copied,
    });
    rmSync(dst, { recursive: true, force: true });
    rmSync(plain, { recursive: true, force: true });
  }
  const med = (k) => [...rows.map((r) => r[k])].sort((a, b) => a - b)[Math.floor(rows.length / 2)];
  console.log(`\n(resume) 20,000 × 4 KiB local → local, killed (SIGKILL) at 50%, then the same command`);
  console.log(`  with the checkpoint     first new copy after ${med('resumedFirst').toFixed(3)} s, done in ${med('resumedAll').toFixed(3)} s; source keys listed and compared: ${med('resumedListed')} (${med('copied')} copied)`);
  console.log(`  without (lists it all)  first new copy after ${med('plainFirst').toFixed(3)} s, done in ${med('plainAll').toFixed(3)} s; source keys listed and compared: ${med('plainListed')}`);
  results.push({ workload: 'resume', rows });
  rmSync(src, { recursive: true, force: true });
}
