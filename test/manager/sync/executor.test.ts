import { describe, expect, it } from 'vitest';
import { Executor } from '../../../src/manager/sync/executor.js';
import type { Task } from '../../../src/shared/transfer/task.js';

const task = (key: string, op: Task['op'] = 'copy'): Task => ({ v: 1, op, entry: { key, size: 0, mtime: 0, isDir: key.endsWith('/') } });
const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('Executor', () => {
  it('never runs more than its concurrency', async () => {
    let running = 0;
    let peak = 0;
    const ex = new Executor<Task>(async () => {
      running++;
      peak = Math.max(peak, running);
      await tick(5);
      running--;
    }, 3);
    for (let i = 0; i < 20; i++) await ex.submit(task(`k${i}`));
    await ex.idle();
    expect(peak).toBe(3);
  });

  it('runs deferred directory work after everything issued before it, deepest first', async () => {
    const log: string[] = [];
    const ex = new Executor<Task>(async (t) => {
      await tick(t.op === 'copy' ? 20 : 1);
      log.push(`${t.op}:${t.entry.key}`);
    }, 4);
    await ex.submit(task('a/b/1'));
    await ex.submit(task('a/b/2'));
    ex.defer(task('a/b/', 'finishDir'));
    await ex.submit(task('a/3'));
    ex.defer(task('a/', 'finishDir'));
    await ex.submit(task('c')); // issued after: need not wait
    await ex.idle();
    expect(log.indexOf('finishDir:a/b/')).toBeGreaterThan(log.indexOf('copy:a/b/1'));
    expect(log.indexOf('finishDir:a/b/')).toBeGreaterThan(log.indexOf('copy:a/b/2'));
    expect(log.indexOf('finishDir:a/')).toBeGreaterThan(log.indexOf('finishDir:a/b/'));
    expect(log.indexOf('finishDir:a/')).toBeGreaterThan(log.indexOf('copy:a/3'));
  });
});
