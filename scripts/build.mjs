// Builds the CLI into dist/cli.js (ESM) plus a chunk per lazily loaded backend: a bundle starts
// faster than hundreds of modules. The file-system threads run dist/fs-thread.js, which the code
// that starts them (file/pool.ts) finds beside itself.
// Builds the cluster worker into dist/worker.cjs: one self-contained CommonJS file (every backend
// and SDK inside, the file-system thread's module inline) that runs alone on a host with Node.js,
// and that scripts/build-sea.mjs turns into single executables.
import { build } from 'esbuild';
import { readFileSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

rmSync(new URL('../dist', import.meta.url), { recursive: true, force: true });

const cli = await build({
  entryPoints: { cli: 'src/manager/entry.ts' },
  metafile: true,
  outdir: 'dist',
  // Backends load their SDKs on first use (dynamic import): separate chunks keep start-up fast.
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  sourcemap: 'linked',
  logLevel: 'warning',
  // ssh2's optional native add-ons: it falls back to pure JavaScript without them.
  // Optional requires of the SDKs' HTTP clients that ferry never takes (proxies).
  external: ['cpu-features', '*.node', 'proxy-agent'],
  define: { FERRY_VERSION: JSON.stringify(pkg.version) },
  banner: {
    js: [
      "import { createRequire as __ferryCreateRequire } from 'node:module';",
      "import { fileURLToPath as __ferryFileURLToPath } from 'node:url';",
      "import { dirname as __ferryDirname } from 'node:path';",
      'const require = __ferryCreateRequire(import.meta.url);',
      'const __filename = __ferryFileURLToPath(import.meta.url);',
      'const __dirname = __ferryDirname(__filename);',
    ].join('\n'),
  },
});

// A thread's module is a file of its own, self-contained (no chunks to resolve when a thread starts).
await build({
  entryPoints: { 'fs-thread': 'src/shared/storage/file/fs-thread.ts' },
  outdir: 'dist',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  sourcemap: 'linked',
  logLevel: 'warning',
});

// pool.ts loads fs-thread.js beside itself or one level up: it must be in dist/ or dist/chunks/.
const pool = 'src/shared/storage/file/pool.ts';
const holder = Object.entries(cli.metafile.outputs).find(([, o]) => pool in o.inputs)?.[0];
if (holder === undefined || !['dist', 'dist/chunks'].includes(dirname(holder))) {
  throw new Error(`${pool} is bundled into ${holder ?? 'no output'}, where dist/fs-thread.js is not found: the file-system threads would not start`);
}

// The worker: one CommonJS file that needs nothing beside it, neither node_modules nor chunks (a
// Node single executable loads nothing but built-in modules). Native add-ons stay out: ws,
// msgpackr and ssh2 fall back to pure JavaScript, and the flags below keep ws and msgpackr from
// even trying to load theirs.
const thread = await build({
  entryPoints: ['src/shared/storage/file/fs-thread.ts'],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  write: false,
  logLevel: 'warning',
});
const threadUrl = 'data:text/javascript;base64,' + Buffer.from(thread.outputFiles[0].contents).toString('base64');
await build({
  entryPoints: ['src/worker/entry.ts'],
  outfile: 'dist/worker.cjs',
  // Smaller to upload and quicker to start on every host (names kept: error classes report theirs).
  minify: true,
  keepNames: true,
  bundle: true,
  splitting: false,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  logLevel: 'warning',
  external: ['cpu-features', '*.node', 'bufferutil', 'utf-8-validate', 'msgpackr-extract', 'proxy-agent'],
  define: {
    FERRY_VERSION: JSON.stringify(pkg.version),
    // file/pool.ts starts its threads from this module (nothing lies beside a copied worker.cjs).
    FERRY_FS_THREAD_URL: JSON.stringify(threadUrl),
    'process.env.WS_NO_BUFFER_UTIL': '"1"',
    'process.env.WS_NO_UTF_8_VALIDATE': '"1"',
    'process.env.MSGPACKR_NATIVE_ACCELERATION_DISABLED': '"true"',
  },
  // pool.ts reads import.meta.url only where FERRY_FS_THREAD_URL is not defined.
  logOverride: { 'empty-import-meta': 'silent' },
});
