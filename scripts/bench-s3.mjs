// Workload (s3): 2,000 objects of 64 KiB, local → S3 and S3 → local, against s3rver on 127.0.0.1;
// ferry and rclone (provider Other, path style) on the same server in the same run.
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleHelper } from './bench-lib.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

export async function benchS3({ work, ferry, runs, measure, report, peers }) {
  // One timed run (a fresh bucket each time, so no setup between runs of `measure`).
  const measureOnce = (name, cmd, argv, opts) => {
    return measure(name, () => {}, cmd, argv, opts, 1);
  };
  // Inside the project, so its node_modules resolve (packages stay external).
  const serverJs = join(root, '.bench', 'bench-s3-server.mjs');
  await bundleHelper('bench-s3-server', 'bench-s3-server');
  const buckets = ['down'];
  for (let i = 0; i < runs; i++) buckets.push(`up-ferry-${i}`, `up-rclone-${i}`);
  // s3rver pages listings with DES tokens, which OpenSSL 3 refuses without the legacy provider.
  const server = spawn(process.execPath, ['--openssl-legacy-provider', serverJs, ...buckets], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, TMPDIR: work },
  });
  const port = await new Promise((resolve, reject) => {
    server.stdout.once('data', (c) => resolve(JSON.parse(String(c)).port));
    server.once('exit', (code) => reject(new Error(`s3rver exited (${code})`)));
  });
  try {
    const src = join(work, 's3-src');
    const data = Buffer.alloc(64 * 1024, 120);
    for (let d = 0; d < 20; d++) {
      mkdirSync(join(src, `dir${String(d).padStart(2, '0')}`), { recursive: true });
      for (let f = 0; f < 100; f++) writeFileSync(join(src, `dir${String(d).padStart(2, '0')}`, `obj${String(f).padStart(3, '0')}.bin`), data);
    }
    const s3 = (bucket) => `s3://S3RVER:S3RVER@127.0.0.1:${port}/${bucket}/`;
    const rcloneEnv = {
      RCLONE_CONFIG_X_TYPE: 's3',
      RCLONE_CONFIG_X_PROVIDER: 'Other',
      RCLONE_CONFIG_X_ENDPOINT: `http://127.0.0.1:${port}`,
      RCLONE_CONFIG_X_ACCESS_KEY_ID: 'S3RVER',
      RCLONE_CONFIG_X_SECRET_ACCESS_KEY: 'S3RVER',
      RCLONE_CONFIG_X_FORCE_PATH_STYLE: 'true',
    };
    let up = 0;
    let upR = 0;
    // Each run uploads into a fresh bucket.
    const ferryUp = [];
    for (let i = 0; i < runs; i++) ferryUp.push(measureOnce('ferry', 'node', [ferry, 'sync', '-q', src + '/', s3(`up-ferry-${up++}`)]));
    const rcloneUp = [];
    if (peers.rclone) for (let i = 0; i < runs; i++) rcloneUp.push(measureOnce('rclone', 'rclone', ['sync', '--transfers', '10', src, `x:up-rclone-${upR++}`], { env: rcloneEnv }));
    const med = (xs) => xs.sort((a, b) => a.seconds - b.seconds)[Math.floor(xs.length / 2)];
    const upRows = [med(ferryUp)];
    if (rcloneUp.length) upRows.push(med(rcloneUp));
    report('(s3 up) 2,000 objects of 64 KiB, local → s3rver', upRows, 2000, 'objects');

    // The download source: one upload by ferry.
    measureOnce('seed', 'node', [ferry, 'sync', '-q', src + '/', s3('down')]);
    const dst = join(work, 's3-dst');
    const clean = () => rmSync(dst, { recursive: true, force: true });
    const downRows = [measure('ferry', clean, 'node', [ferry, 'sync', '-q', s3('down'), dst + '/'])];
    if (peers.rclone) downRows.push(measure('rclone', clean, 'rclone', ['sync', '--transfers', '10', 'x:down', dst], { env: rcloneEnv }));
    report('(s3 down) 2,000 objects of 64 KiB, s3rver → local', downRows, 2000, 'objects');
  } finally {
    server.stdin.end();
    server.kill();
  }
}
