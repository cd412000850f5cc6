/**
 * The worker's command line, shared by the bundle (dist/worker.cjs: `ferry-worker ...`) and the CLI
 * (`ferry worker ...`, join mode):
 *   --manager ws://HOST:PORT (--token-file FILE | --token-stdin) [--name LABEL] [-v]
 * Exit codes: see EXIT in run.ts.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { EXIT, runWorker, type WorkerStop } from './run.js';

declare const FERRY_VERSION: string | undefined;
const VERSION = typeof FERRY_VERSION === 'string' ? FERRY_VERSION : '0.0.0-dev';

class UsageProblem extends Error {}

/** The token in a file: its first line (a trailing newline is not part of it). */
export function readTokenFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageProblem(`cannot read the token file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const token = (text.split('\n')[0] ?? '').replace(/\r$/, '').trim();
  if (token === '') throw new UsageProblem(`the token file ${path} is empty`);
  return token;
}

/**
 * The token as the first line of standard input. Standard input stays open afterwards: its end
 * means the manager (the SSH session that started this worker) is gone, and `onEnd` is called.
 */
function readTokenLine(stdin: NodeJS.ReadStream, onEnd: () => void): Promise<string> {
  return new Promise((resolve, reject) => {
    let line = '';
    let got = false;
    const take = (text: string) => {
      got = true;
      const token = text.replace(/\r$/, '').trim();
      if (token === '') reject(new UsageProblem('no token on standard input (--token-stdin): its first line must be the token'));
      else resolve(token);
    };
    const ended = () => {
      if (!got) take(line);
      onEnd();
    };
    stdin.setEncoding('utf8');
    stdin.on('data', (chunk: string) => {
      if (got) return;
      line += chunk;
      const nl = line.indexOf('\n');
      if (nl >= 0) {
        take(line.slice(0, nl));
        line = '';
      }
    });
    stdin.once('end', ended);
    stdin.once('close', ended);
    stdin.once('error', ended);
  });
}

/** The worker's command line: `ferry-worker ...` (the bundle) or `ferry worker ...` (the CLI). Resolves to the exit code. */
export async function workerMain(argv: string[], name = 'ferry-worker'): Promise<number> {
  const stderr = process.stderr;
  // A worker whose SSH session died must not die of writing to its stderr (nor `--help | head`).
  stderr.on('error', () => {});
  process.stdout.on('error', () => {});
  const program = new Command(name)
    .description('A ferry cluster worker: runs the tasks of a manager (ferry sync --worker ..., or ferry worker to join a run).')
    .version(VERSION, '--version')
    .requiredOption('--manager <URL>', 'the manager to join: ws://HOST:PORT')
    .addOption(new Option('--token-file <FILE>', "a file holding the run's token (its first line)").env('FERRY_TOKEN_FILE'))
    .option('--token-stdin', 'read the token as the first line of standard input; when standard input ends the manager is gone, and the worker stops at once')
    .option('--name <LABEL>', 'a label for the manager’s logs and summary (e.g. a host name or a Slurm task id)')
    .option('--connect-timeout <SECONDS>', 'keep trying to reach a manager that is not listening yet for this long', '60')
    .option('-v, --verbose', 'log each batch of tasks')
    .addHelpText('after', '\nExit codes: 0 the run ended; 1 failed; 2 bad usage; 3 refused by the manager; 4 the manager is gone; 130/143 interrupted (SIGINT/SIGTERM).')
    .exitOverride()
    .configureOutput({ writeOut: (s) => process.stdout.write(s), writeErr: (s) => stderr.write(s) });
  try {
    program.parse(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : EXIT.usage;
    throw err;
  }
  const o = program.opts<{ manager: string; tokenFile?: string; tokenStdin?: boolean; name?: string; verbose?: boolean; connectTimeout: string }>();
  const connectTimeout = Number(o.connectTimeout);
  if (!Number.isFinite(connectTimeout) || connectTimeout < 0) {
    stderr.write(`ERROR --connect-timeout takes a number of seconds, not ${JSON.stringify(o.connectTimeout)}\n`);
    return EXIT.usage;
  }
  if (!/^wss?:\/\/[^/]/.test(o.manager)) {
    stderr.write(`ERROR --manager takes ws://HOST:PORT, not ${JSON.stringify(o.manager)}\n`);
    return EXIT.usage;
  }

  const stop = new AbortController();
  const stopWith = (why: WorkerStop) => {
    if (stop.signal.aborted) {
      // A second signal: leave now.
      if (why.exitCode !== EXIT.managerGone) process.exit(why.exitCode);
      return;
    }
    stop.abort(why);
  };
  process.on('SIGINT', () => stopWith({ exitCode: EXIT.interrupted, message: 'interrupted (SIGINT): stopping' }));
  process.on('SIGTERM', () => stopWith({ exitCode: EXIT.terminated, message: 'terminated (SIGTERM): stopping' }));

  let token: string;
  try {
    if (o.tokenStdin) {
      token = await readTokenLine(process.stdin, () => stopWith({ exitCode: EXIT.managerGone, message: 'standard input closed: the manager is gone' }));
    } else if (o.tokenFile !== undefined) {
      token = readTokenFile(o.tokenFile);
    } else {
      throw new UsageProblem('a token is needed: --token-file FILE (or FERRY_TOKEN_FILE), or --token-stdin');
    }
  } catch (err) {
    if (!(err instanceof UsageProblem)) throw err;
    stderr.write(`ERROR ${err.message}\n`);
    return EXIT.usage;
  }
  return runWorker({ manager: o.manager, token, ...(o.name !== undefined ? { name: o.name } : {}), verbose: o.verbose === true, relayedStderr: o.tokenStdin === true, connectTimeoutMs: connectTimeout * 1000 }, { stderr, stop: stop.signal });
}

