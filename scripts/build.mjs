// Builds the CLI into one ESM file (dist/cli.js): one file starts faster than hundreds of modules.
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

await build({
  entryPoints: ['src/manager/entry.ts'],
  outfile: 'dist/cli.js',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  sourcemap: 'linked',
  logLevel: 'warning',
  // ssh2's optional native add-ons: it falls back to pure JavaScript without them.
  external: ['cpu-features', '*.node'],
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
