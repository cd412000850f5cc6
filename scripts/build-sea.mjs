// Builds the worker's single executables (Node SEA) for hosts without Node.js:
//   dist/sea/ferry-worker-linux-x64, dist/sea/ferry-worker-linux-arm64
// from dist/worker.cjs (run scripts/build.mjs first; `npm run build:sea` does both). One blob
// (the bundle, without a code cache or snapshot, so it is the same for every architecture) is
// injected into each architecture's `node` binary: this machine's own for its architecture, and
// for the other one the binary of the npm package node-linux-<arch> of this Node.js version (the
// same major at least), fetched with `npm pack` into a cache directory. An architecture whose
// binary cannot be had is skipped, said plainly; the others are still built.
// FERRY_SEA_TARGETS=x64 builds only those (comma-separated); FERRY_SEA_OUT puts them elsewhere.
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { inject } from 'postject';

const root = resolve(new URL('..', import.meta.url).pathname);
const dist = join(root, 'dist');
const out = resolve(process.env.FERRY_SEA_OUT ?? join(dist, 'sea'));
const bundle = join(dist, 'worker.cjs');
const FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const TARGETS = (process.env.FERRY_SEA_TARGETS ?? 'x64,arm64').split(',').filter(Boolean);
const cache = process.env.FERRY_SEA_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'ferry', 'sea');

if (!existsSync(bundle)) {
  console.error(`build-sea: ${bundle} is missing: run \`node scripts/build.mjs\` first (or \`npm run build:sea\`)`);
  process.exit(1);
}
if (process.platform !== 'linux') {
  console.error(`build-sea: builds on Linux only (this is ${process.platform})`);
  process.exit(1);
}
mkdirSync(out, { recursive: true });

// The blob: the same for every target, as it holds neither a code cache nor a snapshot (both are
// specific to the architecture and the exact binary that made them).
const blob = join(out, 'worker.blob');
const config = join(out, 'sea-config.json');
writeFileSync(config, JSON.stringify({ main: bundle, output: blob, disableExperimentalSEAWarning: true, useSnapshot: false, useCodeCache: false }));
execFileSync(process.execPath, ['--experimental-sea-config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
const blobData = readFileSync(blob);

const built = [];
const skipped = [];
for (const arch of TARGETS) {
  const exe = join(out, `ferry-worker-linux-${arch}`);
  // No stale executable of an earlier build stays behind, whether this one is built or not.
  rmSync(exe, { force: true });
  let node;
  try {
    node = arch === process.arch ? process.execPath : fetchNode(arch);
  } catch (err) {
    skipped.push(arch);
    console.error(`build-sea: no ferry-worker-linux-${arch}: cannot get a Node.js ${process.version} binary for linux-${arch} (${err.message.trim().split('\n')[0]})`);
    continue;
  }
  copyFileSync(node, exe);
  chmodSync(exe, 0o755);
  strip(exe, arch);
  await inject(exe, 'NODE_SEA_BLOB', blobData, { sentinelFuse: FUSE });
  built.push(arch);
  console.log(`build-sea: ${exe} (${(statSync(exe).size / 2 ** 20).toFixed(1)} MiB)`);
}
rmSync(blob, { force: true });
rmSync(config, { force: true });
if (skipped.length > 0) console.error(`build-sea: built ${built.join(', ') || 'nothing'}; skipped ${skipped.join(', ')}`);
if (built.length === 0) process.exit(1);

/** The `node` binary of the npm package node-linux-<arch>: this version, else the newest of the same major. Cached. */
function fetchNode(arch) {
  const pkg = `node-linux-${arch}`;
  const version = pickVersion(pkg);
  const dir = join(cache, `${pkg}-${version}`);
  const binary = join(dir, 'package', 'bin', 'node');
  if (existsSync(binary)) return binary;
  mkdirSync(dir, { recursive: true });
  console.log(`build-sea: fetching ${pkg}@${version} into ${dir}`);
  // `npm pack` only downloads the tarball: no install scripts run.
  execFileSync('npm', ['pack', `${pkg}@${version}`, '--pack-destination', dir, '--silent'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'));
  if (!tarball) throw new Error(`npm pack ${pkg}@${version} left no tarball`);
  execFileSync('tar', ['-xzf', join(dir, tarball), '-C', dir, 'package/bin/node']);
  rmSync(join(dir, tarball));
  if (!existsSync(binary)) throw new Error(`${pkg}@${version} holds no bin/node`);
  return binary;
}

function pickVersion(pkg) {
  const want = process.version.slice(1);
  const major = want.split('.')[0];
  const listed = JSON.parse(execFileSync('npm', ['view', pkg, 'versions', '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
  const versions = (Array.isArray(listed) ? listed : [listed]).filter((v) => /^\d+\.\d+\.\d+$/.test(v));
  if (versions.includes(want)) return want;
  const same = versions.filter((v) => v.split('.')[0] === major).sort((a, b) => compare(b, a));
  if (same.length === 0) throw new Error(`the registry has no ${pkg} of Node.js ${major}`);
  console.error(`build-sea: ${pkg}@${want} is not in the registry: using ${same[0]}`);
  return same[0];
}

function compare(a, b) {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return 0;
}

/** Symbols are most of an official binary's size. The host's strip may not read another architecture: the binary then stays as it is. */
function strip(exe, arch) {
  const tools = arch === process.arch ? ['strip'] : [`${arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu-strip`, 'strip'];
  for (const tool of tools) {
    try {
      execFileSync(tool, [exe], { stdio: 'ignore' });
      return;
    } catch {
      // next tool
    }
  }
  console.error(`build-sea: could not strip ${exe} (no strip for linux-${arch} here): left as it is`);
}
