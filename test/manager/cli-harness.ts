import { PassThrough } from 'node:stream';
import { main } from '../../src/manager/cli.js';
import type { BackendRegistry } from '../../src/shared/storage/registry.js';

export interface FerryRun {
  code: number;
  stdout: string;
  stderr: string;
  /** The last line of standard output, parsed, when it is a JSON object (--json). */
  json: Record<string, number>;
}

/** Run the ferry command line in this process, capturing its output. */
export async function ferry(args: string[], options: { registry?: BackendRegistry } = {}): Promise<FerryRun> {
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = '';
  let stderr = '';
  out.on('data', (c) => (stdout += c));
  err.on('data', (c) => (stderr += c));
  const code = await main(args, {
    stdout: out as unknown as NodeJS.WriteStream,
    stderr: err as unknown as NodeJS.WriteStream,
    ...(options.registry ? { registry: options.registry } : {}),
  });
  let json: Record<string, number> = {};
  const line = stdout.trim().split('\n').pop();
  if (line?.startsWith('{')) json = JSON.parse(line);
  return { code, stdout, stderr, json };
}
