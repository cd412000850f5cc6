/**
 * The ferry command line (bin/ferry.js, which runs dist/ built from the sources by the global
 * setup) as child processes: what a user, or a scheduler starting join-mode workers, runs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

const FERRY = join(__dirname, '..', '..', 'bin', 'ferry.js');

export interface FerryProcess {
  child: ChildProcess;
  /** What it wrote so far to standard output and standard error. */
  out(): string;
  err(): string;
  /** Its exit code (null when a signal ended it). */
  done: Promise<number | null>;
}

/** The processes a test file starts, so that its teardown can end every one still running. */
export class FerryProcesses {
  readonly #running = new Set<ChildProcess>();

  /** Start `ferry ARGS` with only PATH and `env` in its environment. */
  spawn(args: string[], env: Record<string, string> = {}): FerryProcess {
    let out = '';
    let err = '';
    const child = spawn(process.execPath, [FERRY, ...args], { env: { PATH: process.env['PATH'] ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.#running.add(child);
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    const done = new Promise<number | null>((r) => child.on('close', (code) => (this.#running.delete(child), r(code))));
    return { child, out: () => out, err: () => err, done };
  }

  /** SIGKILL every process still running. */
  killAll(): void {
    for (const c of this.#running) c.kill('SIGKILL');
  }
}

/** Poll `test` until it holds; fails naming `what` after `ms`. */
export async function until(what: string, test: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await test())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
