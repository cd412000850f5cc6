/**
 * `--metrics`: scraped during a real run of the CLI (a child process) and parsed as Prometheus's
 * text format, strictly enough that a malformed line or a counter going backwards fails.
 */
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MetricsServer } from '../../src/manager/metrics.js';
import { SyncStats } from '../../src/manager/sync/stats.js';

const FERRY = join(__dirname, '..', '..', 'bin', 'ferry.js');

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text format 0.0.4: HELP and TYPE before a metric's samples, names and labels well formed. */
function parse(text: string): { types: Map<string, string>; samples: Sample[] } {
  const types = new Map<string, string>();
  const helped = new Set<string>();
  const samples: Sample[] = [];
  expect(text.endsWith('\n')).toBe(true);
  for (const line of text.slice(0, -1).split('\n')) {
    let m: RegExpExecArray | null;
    if ((m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line))) helped.add(m[1]!);
    else if ((m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line))) {
      expect(types.has(m[1]!), `TYPE ${m[1]} twice`).toBe(false);
      types.set(m[1]!, m[2]!);
    } else if ((m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})? (\S+)$/.exec(line))) {
      const name = m[1]!;
      expect(types.has(name), `${name} has no TYPE before its samples`).toBe(true);
      expect(helped.has(name), `${name} has no HELP`).toBe(true);
      const labels: Record<string, string> = {};
      for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
      const value = Number(m[3]);
      expect(Number.isNaN(value) && m[3] !== 'NaN', `bad value in ${line}`).toBe(false);
      samples.push({ name, labels, value });
    } else throw new Error(`not a line of the text format: ${JSON.stringify(line)}`);
  }
  for (const [name, type] of types) {
    expect(name.startsWith('ferry_'), name).toBe(true);
    if (type === 'counter') expect(name.endsWith('_total'), `counter ${name} should end in _total`).toBe(true);
    else expect(name.endsWith('_total'), `gauge ${name} must not end in _total`).toBe(false);
  }
  return { types, samples };
}

const value = (s: Sample[], name: string, labels: Record<string, string> = {}) =>
  s.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v))?.value;

describe('MetricsServer', () => {
  it('escapes label values and reports executors', async () => {
    const stats = new SyncStats();
    const e = stats.executor('w1', 'host "a"\\b\nc');
    e.copiedObjects = 3;
    e.leasesLost = 1;
    e.parts = 7;
    const m = await MetricsServer.listen('127.0.0.1:0', stats);
    try {
      const res = await fetch(m.url);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      const { samples } = parse(await res.text());
      expect(value(samples, 'ferry_executor_copied_objects_total', { executor: 'w1', host: 'host "a"\\b\nc' })).toBe(3);
      expect(value(samples, 'ferry_executor_lease_losses_total', { executor: 'w1' })).toBe(1);
      expect(value(samples, 'ferry_executor_parts_total', { executor: 'w1' })).toBe(7);
      expect((await fetch(m.url.replace('/metrics', '/'))).status).toBe(404);
    } finally {
      await m.close();
    }
  });

  it('refuses an address that is not HOST:PORT as a usage error', async () => {
    await expect(MetricsServer.listen('nonsense', new SyncStats())).rejects.toMatchObject({ code: 'FERRY_USAGE' });
  });
});

describe('ferry sync --metrics', () => {
  let work: string;
  beforeAll(async () => {
    work = await fsp.mkdtemp(join(tmpdir(), 'ferry-metrics-'));
    await fsp.mkdir(join(work, 'src'));
    for (let i = 0; i < 40; i++) await fsp.writeFile(join(work, 'src', `f${i}`), Buffer.alloc(50_000, i));
  });
  afterAll(() => fsp.rm(work, { recursive: true, force: true }));

  it('serves counters that grow during the run and end at the summary', async () => {
    const child = spawn(process.execPath, [FERRY, 'sync', '--json', '--metrics', '127.0.0.1:0', '--bwlimit', '4', join(work, 'src') + '/', join(work, 'dst') + '/'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    let out = '';
    child.stderr.on('data', (d) => (err += d));
    child.stdout.on('data', (d) => (out += d));
    const closed = new Promise<number | null>((r) => child.on('close', r));
    try {
      const deadline = Date.now() + 10_000;
      while (!/metrics for Prometheus at (\S+)/.test(err)) {
        if (Date.now() > deadline) throw new Error(`no metrics address in: ${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const url = /metrics for Prometheus at (\S+)/.exec(err)![1]!;
      const scrapes: Sample[][] = [];
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 700));
        scrapes.push(parse(await (await fetch(url)).text()).samples);
      }
      const copied = scrapes.map((s) => value(s, 'ferry_copied_bytes_total')!);
      expect(copied[0]).toBeGreaterThan(0);
      for (let i = 1; i < copied.length; i++) expect(copied[i]!).toBeGreaterThanOrEqual(copied[i - 1]!);
      expect(copied[2]!).toBeGreaterThan(copied[0]!);
      expect(value(scrapes[2]!, 'ferry_executors')).toBe(1);
      expect(value(scrapes[2]!, 'ferry_executor_throughput_bytes_per_second', { executor: 'manager' })).toBeGreaterThan(0);
      expect(value(scrapes[2]!, 'ferry_scanned_objects_total')).toBe(40);
      expect(await closed).toBe(0);
      expect(JSON.parse(out)).toMatchObject({ copied: 40, copiedBytes: 2_000_000 });
    } finally {
      child.kill('SIGKILL');
    }
  });
});
