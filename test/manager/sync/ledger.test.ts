import { describe, expect, it } from 'vitest';
import { Dispatcher } from '../../../src/manager/sync/dispatch.js';
import { Ledger, type LedgerHooks } from '../../../src/manager/sync/ledger.js';
import type { Task, TaskResult, TaskSpec } from '../../../src/shared/transfer/task.js';

const entry = (key: string, size = 1) => ({ key, size, mtime: 0, isDir: key.endsWith('/') });
const copy = (key: string, size = 1): TaskSpec => ({ v: 1, op: 'copy', entry: entry(key, size) });
const ok = (t: Task): TaskResult => ({ v: 1, id: t.id, outcome: { result: 'copied', bytes: t.entry.size, checked: false } });
const failed = (t: Task): TaskResult => ({ v: 1, id: t.id, error: { code: 'FERRY_FATAL', retry: 'fatal', message: 'no' } });

/** Hooks that record what the ledger says, in order. */
function recorder(onClosed?: (t: Task, r: TaskResult) => 'again' | undefined) {
  const events: string[] = [];
  const hooks: LedgerHooks = {
    dispatched: (t, counted) => void events.push(`out ${t.op} ${t.entry.key}${counted ? '' : ' (follow-up)'}`),
    closed: (t, _counted, r) => {
      events.push(`${'outcome' in r ? 'done' : 'failed'} ${t.op} ${t.entry.key}`);
      return onClosed?.(t, r);
    },
  };
  return { events, hooks };
}

const all = { tasks: 1000, bytes: Infinity };

describe('Ledger', () => {
  it('counts a result once: a task reported twice, or a result for an unknown id, is dropped', () => {
    // The cluster re-dispatches a task whose lease was lost; the first holder may still report it.
    const r = recorder();
    const ledger = new Ledger(r.hooks);
    ledger.add(copy('a'));
    ledger.finish();
    const [t] = ledger.take(all);
    ledger.report([ok(t!)]);
    ledger.report([ok(t!), { v: 1, id: 999, outcome: { result: 'copied', bytes: 0, checked: false } }]);
    expect(r.events).toEqual(['out copy a', 'done copy a']);
    expect(ledger.done).toBe(true);
  });

  it("releases a directory's work when nothing under it is outstanding, siblings independently, parents last", () => {
    const r = recorder();
    const ledger = new Ledger(r.hooks);
    ledger.later('p/', { v: 1, op: 'finishDir', entry: entry('p/') }, false);
    ledger.later('p/a/', { v: 1, op: 'finishDir', entry: entry('p/a/') }, false);
    ledger.add(copy('p/a/1'));
    ledger.reach('p/b/');
    ledger.later('p/b/', { v: 1, op: 'finishDir', entry: entry('p/b/') }, false);
    ledger.add(copy('p/b/1'));
    ledger.finish();
    const files = ledger.take(all);
    expect(files.map((t) => t.entry.key)).toEqual(['p/a/1', 'p/b/1']);
    // Nothing of the directories goes out while their files are out.
    expect(ledger.take(all)).toEqual([]);
    ledger.report([ok(files[1]!)]);
    // p/b/ is done under: its work goes out though p/a/1 is still running.
    const b = ledger.take(all);
    expect(b.map((t) => t.entry.key)).toEqual(['p/b/']);
    ledger.report([ok(files[0]!)]);
    const a = ledger.take(all);
    expect(a.map((t) => t.entry.key)).toEqual(['p/a/']);
    // p/ waits for both children's own work.
    ledger.report([ok(a[0]!)]);
    expect(ledger.take(all)).toEqual([]);
    ledger.report([ok(b[0]!)]);
    expect(ledger.take(all).map((t) => t.entry.key)).toEqual(['p/']);
  });

  it("a directory's work waits for the directory's own task too", () => {
    // Otherwise a directory's attributes could be set before the directory was made.
    const ledger = new Ledger(recorder().hooks);
    ledger.later('d/', { v: 1, op: 'finishDir', entry: entry('d/') }, false);
    ledger.add(copy('d/'));
    ledger.finish();
    const [mk] = ledger.take(all);
    expect(mk!.entry.key).toBe('d/');
    expect(ledger.take(all)).toEqual([]);
    ledger.report([ok(mk!)]);
    expect(ledger.take(all).map((t) => t.op)).toEqual(['finishDir']);
  });

  it('bounds the queue: the planner waits until an executor takes tasks', async () => {
    const ledger = new Ledger(recorder().hooks, 2);
    expect(ledger.add(copy('a'))).toBeUndefined();
    const wait = ledger.add(copy('b'));
    expect(wait).toBeInstanceOf(Promise);
    let resolved = false;
    void wait!.then(() => (resolved = true));
    await new Promise((r) => setImmediate(r));
    expect(resolved).toBe(false);
    ledger.take({ tasks: 1, bytes: Infinity });
    await new Promise((r) => setImmediate(r));
    expect(resolved).toBe(true);
  });

  it('hands out batches bounded by tasks and bytes, at least one task', () => {
    const ledger = new Ledger(recorder().hooks);
    for (const [k, n] of [['a', 10], ['b', 10], ['c', 100], ['d', 1]] as const) ledger.add(copy(k, n));
    expect(ledger.take({ tasks: 10, bytes: 25 }).map((t) => t.entry.key)).toEqual(['a', 'b']);
    expect(ledger.take({ tasks: 10, bytes: 25 }).map((t) => t.entry.key)).toEqual(['c']);
    expect(ledger.take({ tasks: 10, bytes: 25 }).map((t) => t.entry.key)).toEqual(['d']);
  });

  it('stop withdraws what never went out; what is out is still counted', () => {
    const r = recorder();
    const ledger = new Ledger(r.hooks);
    ledger.add(copy('a'));
    ledger.add(copy('b'));
    ledger.later('c/', { v: 1, op: 'deleteDst', entry: entry('c/') });
    const [a] = ledger.take({ tasks: 1, bytes: Infinity });
    expect(ledger.stop()).toBe(1);
    expect(ledger.take(all)).toEqual([]);
    ledger.report([ok(a!)]);
    expect(r.events).toEqual(['out copy a', 'done copy a']);
    expect(ledger.done).toBe(true);
  });

  it('runs a task once more when everything else is done, when the accounting asks', () => {
    const r = recorder((t, res) => ('error' in res && t.op === 'copy' && !t.clearWay ? 'again' : undefined));
    const ledger = new Ledger(r.hooks);
    ledger.add(copy('x'));
    ledger.add({ v: 1, op: 'deleteDst', entry: entry('x/1') });
    ledger.finish();
    const [x, del] = ledger.take(all);
    ledger.report([failed(x!)]);
    expect(ledger.take(all)).toEqual([]); // the deletion is still out
    ledger.report([ok(del!)]);
    const [again] = ledger.take(all);
    expect(again).toMatchObject({ id: x!.id, op: 'copy', clearWay: true });
    ledger.report([failed(again!)]);
    expect(ledger.done).toBe(true);
    expect(r.events.filter((e) => e.startsWith('out'))).toEqual(['out copy x', 'out deleteDst x/1']);
  });
});

describe('Dispatcher', () => {
  it('gives executors batches until the ledger is done, then null', async () => {
    const ledger = new Ledger(recorder().hooks);
    const d = new Dispatcher(ledger);
    const signal = new AbortController().signal;
    const pending = d.next({ tasks: 5, bytes: Infinity }, signal);
    for (const k of ['a', 'b', 'c']) ledger.add(copy(k));
    const batch = await pending;
    expect(batch?.tasks.map((t) => t.entry.key)).toEqual(['a', 'b', 'c']);
    const last = d.next({ tasks: 5, bytes: Infinity }, signal);
    ledger.finish();
    d.report(batch!.tasks.map(ok));
    expect(await last).toBeNull();
  });

  it('an aborted executor stops waiting', async () => {
    const d = new Dispatcher(new Ledger(recorder().hooks));
    const ac = new AbortController();
    const pending = d.next({ tasks: 1, bytes: 1 }, ac.signal);
    ac.abort();
    expect(await pending).toBeNull();
  });
});

describe('Ledger leases', () => {
  it("gives a departed executor's tasks to another, and drops the first holder's late result", () => {
    // A worker that dies mid-batch must lose nothing; if it comes back and reports, the key is still counted once.
    const r = recorder();
    const lost: string[] = [];
    const ledger = new Ledger({ ...r.hooks, leaseLost: (h, n, why) => void lost.push(`${h} ${n} ${why}`) });
    for (const k of ['a', 'b', 'c']) ledger.add(copy(k));
    ledger.finish();
    const w1 = ledger.take({ tasks: 2, bytes: Infinity }, 'w1');
    expect(w1.map((t) => t.entry.key)).toEqual(['a', 'b']);
    expect(ledger.holding('w1')).toBe(2);
    expect(ledger.release('w1', 'disconnected')).toBe(2);
    expect(lost).toEqual(['w1 2 disconnected']);
    // Back at the front of the queue, before what was never taken.
    const w2 = ledger.take(all, 'w2');
    expect(w2.map((t) => t.entry.key)).toEqual(['a', 'b', 'c']);
    ledger.report(w1.map(ok), 'w1');
    expect(r.events.filter((e) => e.startsWith('done'))).toEqual([]);
    ledger.report(w2.map(ok), 'w2');
    expect(r.events).toEqual(['out copy a', 'out copy b', 'out copy c', 'done copy a', 'done copy b', 'done copy c']);
    expect(ledger.done).toBe(true);
  });

  it('names executors holding a task past its lease (the manager exempt); its size lengthens the lease', () => {
    const r = recorder();
    const ledger = new Ledger(r.hooks, 4096, { baseMs: 1000, minRate: 100 });
    ledger.add(copy('small', 0));
    ledger.add(copy('big', 1000));
    ledger.add(copy('mine', 0));
    ledger.finish();
    const t0 = performance.now();
    expect(ledger.take({ tasks: 1, bytes: Infinity }, 'w1').map((t) => t.entry.key)).toEqual(['small']);
    expect(ledger.take({ tasks: 1, bytes: Infinity }, 'w2').map((t) => t.entry.key)).toEqual(['big']);
    expect(ledger.take({ tasks: 1, bytes: Infinity }, 'manager').map((t) => t.entry.key)).toEqual(['mine']);
    expect(ledger.overdue(t0 + 500, 'manager')).toEqual([]);
    // small: 1 s; big: 1 s + 1000 bytes at 100 B/s = 11 s; the manager's own never.
    expect(ledger.overdue(t0 + 2000, 'manager')).toEqual(['w1']);
    expect(ledger.overdue(t0 + 12_000, 'manager').sort()).toEqual(['w1', 'w2']);
    expect(ledger.release('w1', 'held a task past its lease')).toBe(1);
    expect(ledger.take(all, 'w3').map((t) => t.entry.key)).toEqual(['small']);
  });

  it('after a stop, tasks of a departed executor are not run again: they are lost, and the ledger is done', () => {
    const r = recorder();
    const ledger = new Ledger(r.hooks);
    ledger.add(copy('a'));
    ledger.add(copy('b'));
    const held = ledger.take({ tasks: 1, bytes: Infinity }, 'w1');
    expect(ledger.stop()).toBe(1);
    expect(ledger.outstanding).toBe(1);
    ledger.release('w1', 'disconnected');
    expect(ledger.outstanding).toBe(0);
    expect(ledger.take(all, 'w2')).toEqual([]);
    ledger.report(held.map(ok), 'w1');
    expect(r.events).toEqual(['out copy a']);
    expect(ledger.done).toBe(true);
  });

  it('through the dispatcher: each executor reports as itself', async () => {
    const r = recorder();
    const ledger = new Ledger(r.hooks);
    ledger.add(copy('a'));
    ledger.finish();
    const d1 = new Dispatcher(ledger, 'w1');
    const d2 = new Dispatcher(ledger, 'w2');
    const batch = await d1.next(all, new AbortController().signal);
    d2.report(batch!.tasks.map(ok)); // not w2's: dropped
    expect(ledger.done).toBe(false);
    d1.report(batch!.tasks.map(ok));
    expect(ledger.done).toBe(true);
  });
});
