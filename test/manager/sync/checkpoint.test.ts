import { describe, expect, it } from 'vitest';
import { Checkpointer, checkpointId } from '../../../src/manager/sync/checkpoint.js';
import { Ledger } from '../../../src/manager/sync/ledger.js';
import type { JobSpec, SyncOptions } from '../../../src/shared/job.js';
import { MemStore } from '../../../src/shared/storage/mem.js';
import type { TaskSpec } from '../../../src/shared/transfer/task.js';
import { SYNC_OPTIONS } from '../../support/options.js';

const OPTIONS: SyncOptions = SYNC_OPTIONS;
const spec = (over: Partial<SyncOptions> = {}, src = 's3://AK:SECRET@host:9000/b/'): JobSpec => ({
  v: 1, src, dst: '/tmp/x/', options: { ...OPTIONS, ...over }, filter: { rules: [], matchFullPath: false, limits: {} }, now: Date.now(), noHttps: false,
});
function logger() {
  const lines: string[] = [];
  const push = (m: string) => void lines.push(m);
  return { lines, error: push, warn: push, info: push, debug: push };
}

describe('checkpointId', () => {
  it('is the same for runs that differ only in speed, and differs for what changes the work', () => {
    expect(checkpointId(spec({ threads: 50, bwlimit: 100, listThreads: 8 }))).toBe(checkpointId(spec()));
    expect(checkpointId({ ...spec(), now: 1 })).toBe(checkpointId(spec()));
    expect(checkpointId(spec({ deleteDst: true }))).not.toBe(checkpointId(spec()));
    expect(checkpointId(spec({}, 's3://AK:SECRET@host:9000/other/'))).not.toBe(checkpointId(spec()));
  });
});

describe('Checkpointer', () => {
  it('writes, reads back and removes a checkpoint, with no secret in it', async () => {
    const dst = new MemStore('d');
    const log = logger();
    const c = new Checkpointer(dst, spec(), log);
    expect(await c.load()).toBeUndefined();
    await c.save({ resumeFrom: 'd3/f1', uploads: [] }, { copied: 7, copiedBytes: 70 });
    let text = '';
    for await (const chunk of await dst.get(c.key)) text += chunk;
    expect(text).not.toContain('SECRET');
    expect(await c.load()).toMatchObject({ resumeFrom: 'd3/f1', copied: 7 });
    await c.remove();
    expect(await c.load()).toBeUndefined();
  });

  it("ignores another run's checkpoint and says so", async () => {
    const dst = new MemStore('d');
    await new Checkpointer(dst, spec({ deleteDst: true }), logger()).save({ resumeFrom: 'k', uploads: [] }, { copied: 1, copiedBytes: 1 });
    const log = logger();
    expect(await new Checkpointer(dst, spec(), log).load()).toBeUndefined();
    expect(log.lines.join('\n')).toMatch(/ignoring a checkpoint of a run with other arguments/);
  });
});

describe('Ledger.low: the first key not known to be done', () => {
  const copy = (key: string): TaskSpec => ({ v: 1, op: 'copy', entry: { key, size: 1, mtime: 0, isDir: false } });
  const ok = (id: number) => ({ v: 1 as const, id, outcome: { result: 'copied' as const, bytes: 1, checked: false } });
  it('follows the planner and what is still out, failed keys and withdrawn ones hold it back', () => {
    const ledger = new Ledger({ dispatched() {}, closed: () => undefined });
    expect(ledger.low()).toBeUndefined();
    for (const k of ['a', 'b', 'c']) {
      ledger.reach(k);
      ledger.add(copy(k));
    }
    const [a, b] = ledger.take({ tasks: 2, bytes: Infinity });
    expect(ledger.low()).toBe('a');
    ledger.report([ok(a!.id)]);
    expect(ledger.low()).toBe('b');
    ledger.report([{ v: 1, id: b!.id, error: { code: 'FERRY_FATAL', retry: 'fatal', message: 'no' } }]);
    // b failed: a resumed run must try it again.
    expect(ledger.low()).toBe('b');
    ledger.reach('d');
    expect(ledger.low()).toBe('b');
  });

  it('a directory whose attributes are still to be set holds it back', () => {
    const ledger = new Ledger({ dispatched() {}, closed: () => undefined });
    ledger.reach('p/');
    ledger.later('p/', { v: 1, op: 'finishDir', entry: { key: 'p/', size: 0, mtime: 0, isDir: true } }, false);
    ledger.reach('p/x');
    ledger.add(copy('p/x'));
    ledger.reach('q');
    const [x] = ledger.take({ tasks: 1, bytes: Infinity });
    ledger.report([ok(x!.id)]);
    expect(ledger.low()).toBe('p/');
  });

  it('tasks withdrawn at a stop hold it back', () => {
    const ledger = new Ledger({ dispatched() {}, closed: () => undefined });
    for (const k of ['a', 'b']) {
      ledger.reach(k);
      ledger.add(copy(k));
    }
    ledger.stop();
    expect(ledger.low()).toBe('a');
  });
});
