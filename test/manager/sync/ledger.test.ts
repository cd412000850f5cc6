import { describe, expect, it } from 'vitest';
import { Dispatcher } from '../../../src/manager/sync/dispatch.js';
import { FatalError, TransientError } from '../../../src/shared/errors.js';
import { Ledger, type LedgerHooks, type LedgerSpec, type LedgerTask, type SplitSteps } from '../../../src/manager/sync/ledger.js';
import type { Task, TaskResult, TaskSpec } from '../../../src/shared/transfer/task.js';

const entry = (key: string, size = 1) => ({ key, size, mtime: 0, isDir: key.endsWith('/') });
const copy = (key: string, size = 1): TaskSpec => ({ v: 1, op: 'copy', entry: entry(key, size) });
const ok = (t: Task): TaskResult => ({ v: 1, id: t.id, outcome: { result: 'copied', bytes: t.entry.size, checked: false } });
const failed = (t: Task): TaskResult => ({ v: 1, id: t.id, error: { code: 'FERRY_FATAL', retry: 'fatal', message: 'no' } });

/** Hooks that record what the ledger says, in order. */
function recorder(onClosed?: (t: LedgerTask, r: TaskResult) => 'again' | undefined) {
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

describe('Ledger split copies', () => {
  type Part = Extract<Task, { op: 'copyPart' }>;
  const split = (key: string, size: number, partSize: number): LedgerSpec => ({ v: 1, op: 'split', entry: entry(key, size), partSize });
  const partOk = (t: Task, etag = `e${(t as Part).part}`): TaskResult => {
    const p = t as Part;
    return { v: 1, id: t.id, outcome: { result: 'copied', bytes: p.last - p.first + 1, checked: false, part: { partNumber: p.part, etag, size: p.last - p.first + 1 } } };
  };
  const tick = () => new Promise((r) => setImmediate(r));
  const parts = (ts: Task[]) => ts.map((t) => `${(t as Part).part}:${(t as Part).first}-${(t as Part).last}`);

  /** Steps that record what the manager would do, and a ledger whose hooks record what it counts. */
  function setup(over: Partial<SplitSteps> = {}) {
    const calls: string[] = [];
    const done: string[] = [];
    let n = 0;
    const steps: SplitSteps = {
      start: async (t) => (calls.push(`start ${t.entry.key}`), { key: t.entry.key, uploadId: `u${++n}` }),
      complete: async (t, u, ps) => (calls.push(`complete ${u.uploadId} ${ps.map((p) => `${p.partNumber}:${p.etag}`).join(',')}`), { result: 'copied', bytes: t.entry.size, checked: false }),
      abort: async (_t, u) => void calls.push(`abort ${u.uploadId}`),
      adopt: (_t, u) => void calls.push(`adopt ${u.uploadId}`),
      keep: (u) => void calls.push(`keep ${u.uploadId}`),
      ...over,
    };
    const r = recorder();
    const closed: TaskResult[] = [];
    const hooks: LedgerHooks = {
      ...r.hooks,
      closed: (t, c, res, holder) => {
        if (t.op === 'split') {
          // The manager completed or aborted it: no executor's result.
          expect(holder).toBeUndefined();
          closed.push(res);
        }
        return r.hooks.closed(t, c, res, holder);
      },
      partDone: (t, holder) => void done.push(`${holder} part ${t.part}`),
    };
    return { ledger: new Ledger(hooks, 4096, undefined, steps), calls, done, events: r.events, closed };
  }

  it('starts the upload when the split reaches the head of the queue, counts the key once: found with its first part, copied with its size when completed', async () => {
    const { ledger, calls, done, events, closed } = setup();
    ledger.add(split('big', 25, 10));
    ledger.add(copy('small'));
    ledger.finish();
    // The split is the manager's: it never goes to an executor; its parts come first once the upload is open.
    expect(ledger.take(all, 'w1')).toEqual([]);
    expect(calls).toEqual(['start big']);
    expect(events).toEqual([]);
    await tick();
    const first = ledger.take({ tasks: 1, bytes: 0 }, 'w1');
    expect(parts(first)).toEqual(['1:0-9']);
    expect(first[0]).toMatchObject({ op: 'copyPart', upload: { key: 'big', uploadId: 'u1' } });
    expect(events).toEqual(['out split big']);
    const rest = ledger.take(all, 'w2');
    expect(parts(rest.slice(0, 2))).toEqual(['2:10-19', '3:20-24']);
    expect(rest[2]!.entry.key).toBe('small');
    ledger.report([partOk(rest[1]!), partOk(rest[0]!)], 'w2');
    expect(ledger.outstanding).toBe(3); // the key, part 1 and 'small'
    ledger.report([partOk(first[0]!)], 'w1');
    expect(done).toEqual(['w2 part 3', 'w2 part 2', 'w1 part 1']);
    expect(ledger.done).toBe(false);
    await tick();
    expect(calls).toEqual(['start big', 'complete u1 1:e1,2:e2,3:e3']);
    expect(events).toEqual(['out split big', 'out copy small', 'done split big']);
    expect(closed).toEqual([{ v: 1, id: expect.any(Number), outcome: { result: 'copied', bytes: 25, checked: false } }]);
    expect(ledger.done).toBe(false); // 'small' is still out
    ledger.report([ok(rest[2]!)], 'w2');
    expect(ledger.done).toBe(true);
  });

  it('a lost lease sends just that part to another executor; the first holder’s late result is dropped', async () => {
    const { ledger, calls, done } = setup();
    ledger.add(split('big', 30, 10));
    ledger.finish();
    ledger.take(all, 'w1');
    await tick();
    const w1 = ledger.take({ tasks: 1, bytes: 0 }, 'w1');
    const w2 = ledger.take(all, 'w2');
    expect(parts(w2)).toEqual(['2:10-19', '3:20-29']);
    expect(ledger.release('w1', 'disconnected')).toBe(1);
    const w3 = ledger.take(all, 'w3');
    expect(parts(w3)).toEqual(['1:0-9']);
    expect(w3[0]!.id).toBe(w1[0]!.id);
    ledger.report([partOk(w1[0]!, 'late')], 'w1');
    ledger.report([partOk(w3[0]!, 'again'), ...w2.map((t) => partOk(t))], 'w3');
    expect(done).toEqual(['w3 part 1']); // w2's results were sent as w3's: not w3's to give
    ledger.report(w2.map((t) => partOk(t)), 'w2');
    await tick();
    expect(calls).toEqual(['start big', 'complete u1 1:again,2:e2,3:e3']);
    expect(ledger.done).toBe(true);
  });

  it('a part that fails (after its retries) fails the key once, drops the parts not out, and aborts the upload once no part is out', async () => {
    const { ledger, calls, events, closed } = setup();
    ledger.add(split('big', 40, 10));
    ledger.add(copy('after'));
    ledger.finish();
    expect(ledger.take({ tasks: 1, bytes: 0 }, 'w1')).toEqual([]);
    await tick();
    const [p1] = ledger.take({ tasks: 1, bytes: 0 }, 'w1');
    const [p2] = ledger.take({ tasks: 1, bytes: 0 }, 'w2');
    ledger.report([failed(p1!)], 'w1');
    // Parts 3 and 4 never go out; the next task does.
    expect(ledger.take(all, 'w1').map((t) => t.op)).toEqual(['copy']);
    await tick();
    expect(calls).toEqual(['start big']); // part 2 is still being uploaded
    ledger.report([partOk(p2!)], 'w2');
    await tick();
    expect(calls).toEqual(['start big', 'abort u1']);
    expect(events.filter((e) => e.includes('big'))).toEqual(['out split big', 'failed split big']);
    expect(closed.at(-1)).toMatchObject({ error: { code: 'FERRY_FATAL' } });
  });

  it('a part whose executor leaves after the key failed is not run again; the abort follows', async () => {
    const { ledger, calls } = setup();
    ledger.add(split('big', 20, 10));
    ledger.finish();
    ledger.take(all, 'w1');
    await tick();
    const [p1] = ledger.take({ tasks: 1, bytes: 0 }, 'w1');
    ledger.take({ tasks: 1, bytes: 0 }, 'w2');
    ledger.report([failed(p1!)], 'w1');
    ledger.release('w2', 'disconnected');
    expect(ledger.take(all, 'w3')).toEqual([]);
    await tick();
    expect(calls).toEqual(['start big', 'abort u1']);
    expect(ledger.done).toBe(true);
  });

  it('an upload that will not start fails the key (found and failed); a failed completion aborts the upload and fails the key', async () => {
    const a = setup({ start: async () => Promise.reject(new TransientError('no')) });
    a.ledger.add(split('big', 20, 10));
    a.ledger.finish();
    expect(a.ledger.take(all, 'w1')).toEqual([]);
    await tick();
    expect(a.events).toEqual(['out split big', 'failed split big']);
    expect(a.ledger.done).toBe(true);

    const b = setup({ complete: async () => Promise.reject(new FatalError('InvalidPart')) });
    b.ledger.add(split('big', 20, 10));
    b.ledger.finish();
    b.ledger.take(all, 'w1');
    await tick();
    b.ledger.report(b.ledger.take(all, 'w1').map((t) => partOk(t)), 'w1');
    await tick();
    await tick();
    expect(b.calls).toEqual(['start big', 'abort u1']);
    expect(b.events).toEqual(['out split big', 'failed split big']);
    expect(b.closed[0]).toMatchObject({ error: { message: 'InvalidPart' } });
    expect(b.ledger.done).toBe(true);
  });

  it('stop: a split not yet started is withdrawn; one whose parts had not all gone out is aborted once its parts out are back, and its key is lost', async () => {
    const { ledger, calls, events, closed } = setup();
    ledger.add(split('a', 20, 10));
    ledger.add(split('b', 20, 10));
    ledger.take({ tasks: 1, bytes: 0 }, 'w1'); // starts a; b waits behind its parts
    await tick();
    const [a1] = ledger.take({ tasks: 1, bytes: 0 }, 'w1');
    expect(ledger.stop()).toBe(1);
    expect(ledger.take(all, 'w2')).toEqual([]);
    await tick();
    expect(calls).toEqual(['start a']);
    ledger.report([partOk(a1!)], 'w1');
    await ledger.splitsSettled();
    expect(calls).toEqual(['start a', 'abort u1']);
    expect(events).toEqual(['out split a']);
    expect(closed).toEqual([]);
    expect(ledger.done).toBe(true);
  });

  it('stop while every part is out: the upload still completes when they come back', async () => {
    const { ledger, calls, events } = setup();
    ledger.add(split('a', 20, 10));
    ledger.take(all, 'w1');
    await tick();
    const out = ledger.take(all, 'w1');
    expect(ledger.stop()).toBe(0);
    ledger.report(out.map((t) => partOk(t)), 'w1');
    await ledger.splitsSettled();
    expect(calls).toEqual(['start a', 'complete u1 1:e1,2:e2']);
    expect(events).toEqual(['out split a', 'done split a']);
  });

  it('opens one upload at a time: the next split copy starts once the previous one is started, behind its parts', async () => {
    // Otherwise an executor asking for work would start every split copy queued, long before their parts go out.
    const { ledger, calls } = setup();
    ledger.add(split('a', 20, 10));
    ledger.add(split('b', 20, 10));
    ledger.add(copy('c'));
    ledger.finish();
    const d = new Dispatcher(ledger, 'w1');
    const first = await d.next({ tasks: 1, bytes: 0 }, new AbortController().signal);
    expect(calls).toEqual(['start a']);
    expect(parts(first!.tasks)).toEqual(['1:0-9']);
    // b's turn once a's parts are out: it starts; what is not a split copy goes on meanwhile.
    expect(parts(ledger.take(all, 'w1'))).toEqual(['2:10-19']);
    expect(calls).toEqual(['start a', 'start b']);
    expect(ledger.take(all, 'w2').map((t) => t.entry.key)).toEqual(['c']);
    await tick();
    expect(parts(ledger.take(all, 'w2'))).toEqual(['1:0-9', '2:10-19']);
  });

  it('an executor waiting for work does not start a second split copy while one is starting', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { ledger, calls } = setup({ start: async (t) => (calls.push(`start ${t.entry.key}`), await gate, { key: t.entry.key, uploadId: 'u' }) });
    ledger.add(split('a', 20, 10));
    ledger.add(split('b', 20, 10));
    ledger.finish();
    const d = new Dispatcher(ledger, 'w1');
    const pending = d.next({ tasks: 1, bytes: 0 }, new AbortController().signal);
    for (let i = 0; i < 5; i++) await tick();
    expect(calls).toEqual(['start a']);
    release();
    expect(parts((await pending)!.tasks)).toEqual(['1:0-9']);
  });

  it("a split copy's directory work waits for its upload to complete", async () => {
    const { ledger } = setup();
    ledger.later('d/', { v: 1, op: 'finishDir', entry: entry('d/') }, false);
    ledger.add(split('d/big', 20, 10));
    ledger.finish();
    ledger.take(all, 'w1');
    await tick();
    const ps = ledger.take(all, 'w1');
    expect(ps.map((t) => t.op)).toEqual(['copyPart', 'copyPart']);
    ledger.report(ps.map((t) => partOk(t)), 'w1');
    expect(ledger.take(all, 'w1')).toEqual([]);
    await tick();
    expect(ledger.take(all, 'w1').map((t) => t.op)).toEqual(['finishDir']);
  });

  it('--enable-checkpoint: a stopped split copy keeps its upload open with the parts stored so far, for the resumed run', async () => {
    const { ledger, calls, events } = setup();
    ledger.keepStopped = true;
    ledger.add(split('big', 40, 10));
    ledger.finish();
    ledger.take(all, 'w1');
    await tick();
    const out = ledger.take({ tasks: 2, bytes: Infinity }, 'w1');
    ledger.report([partOk(out[0]!)], 'w1');
    expect(ledger.openUploads()).toEqual([{ key: 'big', size: 40, mtime: 0, partSize: 10, upload: { key: 'big', uploadId: 'u1' }, parts: [{ partNumber: 1, etag: 'e1', size: 10 }] }]);
    ledger.stop();
    // Part 2 is still out: it comes back stored and is kept too.
    ledger.report([partOk(out[1]!)], 'w1');
    await tick();
    expect(calls).toEqual(['start big', 'keep u1']);
    expect(events).toEqual(['out split big']); // lost, not failed
    expect(ledger.openUploads()).toEqual([expect.objectContaining({ upload: { key: 'big', uploadId: 'u1' }, parts: [expect.objectContaining({ partNumber: 1 }), expect.objectContaining({ partNumber: 2 })] })]);
    expect(ledger.low()).toBe('big');
  });

  it('a resumed run continues a kept upload: only the missing parts go out, the completion has them all', async () => {
    const { ledger, calls, done } = setup();
    const kept = { key: 'big', size: 40, mtime: 0, partSize: 10, upload: { key: 'big', uploadId: 'old' }, parts: [1, 3].map((n) => ({ partNumber: n, etag: `kept${n}`, size: 10 })) };
    ledger.resume([kept]);
    ledger.add(split('big', 40, 10));
    ledger.finish();
    const out = ledger.take(all, 'w1');
    expect(parts(out)).toEqual(['2:10-19', '4:30-39']);
    expect(out[0]).toMatchObject({ upload: { uploadId: 'old' } });
    ledger.report(out.map((t) => partOk(t)), 'w1');
    await tick();
    expect(done).toEqual(['w1 part 2', 'w1 part 4']);
    expect(calls).toEqual(['adopt old', 'complete old 1:kept1,2:e2,3:kept3,4:e4']);
    expect(ledger.unadopted()).toEqual([]);
    expect(ledger.done).toBe(true);
  });

  it('a kept upload that is gone (aborted or expired meanwhile): the copy starts a new upload with every part', async () => {
    const { ledger, calls } = setup();
    ledger.resume([{ key: 'big', size: 30, mtime: 0, partSize: 10, upload: { key: 'big', uploadId: 'old' }, parts: [{ partNumber: 1, etag: 'k1', size: 10 }] }]);
    ledger.add(split('big', 30, 10));
    ledger.finish();
    const out = ledger.take(all, 'w1');
    expect(parts(out)).toEqual(['2:10-19', '3:20-29']);
    const gone = { code: 'FERRY_NOT_FOUND', retry: 'notFound' as const, message: 'NoSuchUpload' };
    ledger.report([{ v: 1, id: out[0]!.id, error: gone }], 'w1');
    ledger.report([partOk(out[1]!)], 'w1');
    await tick();
    const again = ledger.take(all, 'w1');
    expect(parts(again)).toEqual(['1:0-9', '2:10-19', '3:20-29']);
    expect(again[0]).toMatchObject({ upload: { uploadId: 'u1' } });
    ledger.report(again.map((t) => partOk(t)), 'w1');
    await tick();
    expect(calls).toEqual(['adopt old', 'start big', 'complete u1 1:e1,2:e2,3:e3']);
    expect(ledger.done).toBe(true);
  });

  it('a kept upload of an object that changed is not continued: the copy starts anew and the old upload is left for the run to abort', async () => {
    const { ledger, calls } = setup();
    const kept = { key: 'big', size: 30, mtime: 5, partSize: 10, upload: { key: 'big', uploadId: 'old' }, parts: [] };
    ledger.resume([kept, { ...kept, key: 'other', upload: { key: 'other', uploadId: 'old2' } }]);
    ledger.add(split('big', 30, 10)); // mtime 0: changed since
    ledger.finish();
    ledger.take(all, 'w1');
    await tick();
    expect(calls).toEqual(['start big']);
    expect(ledger.unadopted().map((u) => u.upload.uploadId).sort()).toEqual(['old', 'old2']);
    // Until they are aborted, a checkpoint still records them.
    expect(ledger.openUploads().map((u) => u.upload.uploadId)).toEqual(expect.arrayContaining(['old', 'old2', 'u1']));
  });

  it('refuses a split copy without the steps to run it', () => {
    expect(() => new Ledger(recorder().hooks).add(split('big', 20, 10))).toThrow(/split copy/);
  });
});

describe('Ledger: split copies shared among executors', () => {
  it("no executor holds more than its share of one upload's parts; a capped one waits for a change, not for work", async () => {
    // Regression (found by the split benchmark): with a slot per thread, the first worker to ask took every part of an object of few parts.
    const steps = {
      start: async () => ({ key: 'big', uploadId: 'u1' }),
      complete: async () => ({ result: 'copied' as const, bytes: 8, checked: false }),
      abort: async () => {},
      adopt: () => {},
      keep: () => {},
    };
    const ledger = new Ledger({ dispatched() {}, closed: () => undefined }, 4096, undefined, steps);
    ledger.executors = () => 3;
    ledger.add({ v: 1, op: 'split', entry: { key: 'big', size: 8, mtime: 0, isDir: false }, partSize: 1 } as never);
    ledger.finish();
    expect(ledger.take({ tasks: 10, bytes: Infinity }, 'w1')).toEqual([]); // starts the upload
    await new Promise((r) => setTimeout(r, 10));
    const w1 = ledger.take({ tasks: 10, bytes: Infinity }, 'w1');
    expect(w1).toHaveLength(3); // ceil(8 parts / 3 executors)
    expect(ledger.take({ tasks: 10, bytes: Infinity }, 'w1')).toEqual([]);
    let woke = false;
    void ledger.waitForWork('w1').then(() => (woke = true));
    await new Promise((r) => setTimeout(r, 10));
    expect(woke).toBe(false);
    expect(ledger.take({ tasks: 10, bytes: Infinity }, 'w2')).toHaveLength(3);
    expect(ledger.take({ tasks: 10, bytes: Infinity }, 'w3')).toHaveLength(2);
    ledger.report([{ v: 1, id: w1[0]!.id, outcome: { result: 'copied', bytes: 1, checked: false, part: { partNumber: (w1[0] as { part: number }).part, etag: 'e', size: 1 } } }], 'w1');
    await new Promise((r) => setTimeout(r, 10));
    expect(woke).toBe(true);
  });
});
