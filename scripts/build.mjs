// Builds the CLI into dist/cli.js (ESM) plus a chunk per lazily loaded backend: a bundle starts
// faster than hundreds of modules. The file-system threads run dist/fs-thread.js, which the code
// that starts them (file/pool.ts) finds beside itself.
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

// pool.ts loads new URL('./fs-thread.js', import.meta.url): it must not end up in dist/chunks/.
const pool = 'src/shared/storage/file/pool.ts';
const holder = Object.entries(cli.metafile.outputs).find(([, o]) => pool in o.inputs)?.[0];
if (holder === undefined || dirname(holder) !== 'dist') {
  throw new Error(`${pool} is bundled into ${holder ?? 'no output'}, not beside dist/fs-thread.js: the file-system threads would not start`);
}
