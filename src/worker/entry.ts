/**
 * The worker bundle's entry (dist/worker.cjs, and the single executables built from it):
 *   ferry-worker --manager ws://HOST:PORT (--token-file FILE | --token-stdin) [--name LABEL] [-v]
 * Exit codes: see EXIT in run.ts.
 */
import { EXIT } from './run.js';
import { workerMain } from './cli.js';

// File copies and stats run on libuv's threads: more than the default four.
process.env['UV_THREADPOOL_SIZE'] ??= '8';
process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

workerMain(process.argv.slice(2)).then(
  // Let stderr drain, then leave even if an SDK keeps idle sockets open.
  (code) => process.stderr.write('', () => process.exit(code)),
  (err: unknown) => {
    process.stderr.write(`ERROR ${(err as Error)?.message ?? String(err)}\n`, () => process.exit(EXIT.failed));
  },
);
