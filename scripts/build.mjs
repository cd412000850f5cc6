// Builds the CLI into dist/cli.js (ESM) plus a chunk per lazily loaded backend: a bundle starts
// faster than hundreds of modules.
import { build } from 'esbuild';
import { readFileSync, rmSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

rmSync(new URL('../dist', import.meta.url), { recursive: true, force: true });

await build({
  entryPoints: { cli: 'src/manager/entry.ts' },
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
