import { describe, expect, it } from 'vitest';
import { Packr } from 'msgpackr';
import { fromWire, toWire } from '../../../src/shared/errors.js';
import type { JobSpec, SyncOptions } from '../../../src/shared/job.js';
import { decodeManagerMessage, decodeWorkerMessage, encodeMessage, MAX_FRAME_BYTES, PROTOCOL_VERSION, ProtocolError, type ManagerMessage, type WorkerMessage } from '../../../src/shared/protocol/index.js';
import { SYNC_OPTIONS } from '../../support/options.js';

const OPTIONS: SyncOptions = SYNC_OPTIONS;
const JOB: JobSpec = {
  v: 1,
  src: 's3://AK:SK@bucket.s3.eu-west-1.amazonaws.com/data/',
  dst: '/backup/data/',
  options: { ...OPTIONS, start: 'a', storageClass: 'STANDARD_IA' },
  filter: { rules: [{ include: false, pattern: '*.tmp' }], matchFullPath: false, limits: { minSize: 10 } },
  now: 1_700_000_000_123,
  noHttps: false,
};
const BIG = 12 * 2 ** 30 + 7;

const WORKER_MESSAGES: WorkerMessage[] = [
  { t: 'hello', v: PROTOCOL_VERSION, token: 'tok', worker: { host: 'h', pid: 42, node: 'v20.0.0', arch: 'x64', ferry: '0.1.0', name: 'slurm-3' } },
  { t: 'hello', v: PROTOCOL_VERSION, token: 'tok', worker: { host: 'h', pid: 42, node: 'v20.0.0', arch: 'arm64', ferry: '0.1.0' } },
  { t: 'want', req: 7, tasks: 256, bytes: BIG },
  {
    t: 'results',
    results: [
      { v: 1, id: 1, outcome: { result: 'copied', bytes: BIG, checked: true } },
      { v: 1, id: 2, outcome: { result: 'kept', bytes: 0, checked: false, warning: 'dir/ is not empty: kept' } },
      { v: 1, id: 3, error: toWire(fromWire({ code: 'FERRY_NOT_FOUND', retry: 'notFound', message: 'gone' })) },
      { v: 1, id: 4, outcome: { result: 'copied', bytes: 256 << 20, checked: false, part: { partNumber: 48, etag: '"9b2cf535f27731c974343645a3985328"', size: 256 << 20 } } },
    ],
  },
  { t: 'results', results: [] },
  { t: 'beat', bytes: 0 },
  { t: 'beat', bytes: BIG },
  { t: 'log', level: 'warn', message: 'cannot open the stores' },
];

const MANAGER_MESSAGES: ManagerMessage[] = [
  { t: 'welcome', v: PROTOCOL_VERSION, id: 'w1', job: JOB, env: { AWS_ACCESS_KEY_ID: 'AK', AWS_SECRET_ACCESS_KEY: 'SK' }, threads: 10, rate: 1_250_000, beatMs: 1000, deadMs: 30_000 },
  {
    t: 'batch',
    req: 7,
    batch: {
      v: 1,
      tasks: [
        { v: 1, id: 1, op: 'copy', entry: { key: 'a/b.bin', size: BIG, mtime: 1_700_000_000_000, isDir: false, mode: 0o644, etag: '"abc"' } },
        { v: 1, id: 2, op: 'copy', entry: { key: 'a/', size: 0, mtime: 1, isDir: true }, clearWay: true },
        { v: 1, id: 3, op: 'deleteSrc', entry: { key: 'x', size: 3, mtime: 1, isDir: false }, dstEtag: '"e"' },
        { v: 1, id: 4, op: 'check', entry: { key: 'l', size: 3, mtime: 1, isDir: false, isSymlink: true, target: '../t' }, keepSource: true },
        { v: 1, id: 5, op: 'finishDir', entry: { key: 'a/', size: 0, mtime: 1, isDir: true } },
        { v: 1, id: 6, op: 'deleteDst', entry: { key: 'z', size: 0, mtime: 1, isDir: false } },
        { v: 1, id: 7, op: 'copyPerms', entry: { key: 'p', size: 0, mtime: 1, isDir: false, mode: 0o600, uid: 1000, gid: 1000 } },
        { v: 1, id: 8, op: 'copyPart', entry: { key: 'a/b.bin', size: BIG, mtime: 1, isDir: false }, upload: { key: 'a/b.bin', uploadId: 'VXBsb2FkIElE' }, part: 48, first: 47 * 2 ** 28, last: 48 * 2 ** 28 - 1 },
        { v: 1, id: 9, op: 'copyPart', entry: { key: 'a/b.bin', size: BIG, mtime: 1, isDir: false }, upload: { key: 'a/b.bin', uploadId: 'VXBsb2FkIElE' }, part: 49, first: 48 * 2 ** 28, last: BIG - 1 },
      ],
    },
  },
  { t: 'batch', req: 8, batch: null },
  { t: 'batch', req: 9, batch: { v: 1, tasks: [] } },
  { t: 'rate', rate: 0 },
  { t: 'rate', rate: 125_000.5 },
  { t: 'beat' },
  { t: 'refuse', reason: 'wrong token' },
  { t: 'end', reason: 'the run is over' },
];

/** A frame of any value, as a peer with a bug (or another build) might send it. */
const raw = (x: unknown) => new Packr({ useRecords: false }).pack(x);

function protocolError(decode: () => unknown): ProtocolError {
  try {
    decode();
  } catch (err) {
    expect(err).toBeInstanceOf(ProtocolError);
    expect((err as ProtocolError).code).toBe('FERRY_PROTOCOL');
    expect((err as ProtocolError).retry).toBe('fatal');
    return err as ProtocolError;
  }
  throw new Error('decoded without an error');
}

describe('protocol codec', () => {
  it('round-trips every worker message as plain data', () => {
    for (const m of WORKER_MESSAGES) {
      const back = decodeWorkerMessage(encodeMessage(m));
      expect(back).toStrictEqual(m);
    }
  });

  it('round-trips every manager message as plain data, 64-bit sizes and times as numbers', () => {
    for (const m of MANAGER_MESSAGES) expect(decodeManagerMessage(encodeMessage(m))).toStrictEqual(m);
    const batch = decodeManagerMessage(encodeMessage(MANAGER_MESSAGES[1]!));
    expect(batch.t === 'batch' && typeof batch.batch?.tasks[0]?.entry.size).toBe('number');
  });

  it('reads frames in every form ws hands over (Buffer, ArrayBuffer, fragments)', () => {
    const frame = encodeMessage({ t: 'beat' });
    const ab = new Uint8Array(frame).buffer;
    expect(decodeManagerMessage(ab)).toStrictEqual({ t: 'beat' });
    expect(decodeManagerMessage([frame.subarray(0, 1), frame.subarray(1)])).toStrictEqual({ t: 'beat' });
  });

  it('keeps fields a later build adds (optional additions pass through)', () => {
    expect(decodeManagerMessage(raw({ t: 'rate', rate: 5, burst: 9 }))).toStrictEqual({ t: 'rate', rate: 5, burst: 9 });
  });

  it('carries keys of names that are not valid UTF-8 exactly (their raw bytes as lone surrogates)', () => {
    // Regression: msgpack strings are UTF-8, so a raw key arrived as U+FFFD and a worker wrote a mangled name.
    const raw = 'dir/a\udcffb'; // the bytes 61 ff 62
    const target = '../t\udcc3';
    const m: ManagerMessage = {
      t: 'batch',
      req: 1,
      batch: { v: 1, tasks: [{ v: 1, id: 1, op: 'copy', entry: { key: raw, size: 1, mtime: 1, isDir: false } }, { v: 1, id: 2, op: 'copy', entry: { key: 'l', size: 0, mtime: 1, isDir: false, isSymlink: true, target } }] },
    };
    const back = decodeManagerMessage(encodeMessage(m));
    expect(back).toStrictEqual(m);
    const r: WorkerMessage = { t: 'results', results: [{ v: 1, id: 1, error: { code: 'FERRY_FATAL', retry: 'fatal', message: `cannot write ${raw}` } }] };
    expect(decodeWorkerMessage(encodeMessage(r))).toStrictEqual(r);
  });

  it('uses no records extension: a frame decodes in a packer that never saw its shapes', () => {
    const m = MANAGER_MESSAGES[0]!;
    const frame = encodeMessage(m);
    expect(new Packr({ useRecords: false }).unpack(frame)).toStrictEqual(m);
    // The 0xd4/0x72 record extension header would be there otherwise.
    expect(frame.includes(Buffer.from([0xd4, 0x72]))).toBe(false);
  });

  it('refuses what is not a message, naming the problem', () => {
    const cases: [unknown, RegExp][] = [
      [42, /must be a map, not a number/],
      [null, /must be a map, not null/],
      [[1, 2], /must be a map, not an array/],
      [{ type: 'beat' }, /needs a string t/],
      [{ t: 7 }, /needs a string t/],
      [{ t: 'gossip' }, /unknown manager message type "gossip"/],
    ];
    for (const [value, message] of cases) expect(protocolError(() => decodeManagerMessage(raw(value))).message).toMatch(message);
    expect(protocolError(() => decodeWorkerMessage(raw({ t: 'welcome' }))).message).toMatch(/unknown worker message type "welcome"/);
    expect(protocolError(() => decodeManagerMessage(Buffer.alloc(0))).message).toMatch(/empty/);
    expect(protocolError(() => decodeManagerMessage(Buffer.from([0x92, 0x01]))).message).toMatch(/not one msgpack value/);
  });

  it('names a missing or ill-typed field of each message', () => {
    const welcome = MANAGER_MESSAGES[0] as Extract<ManagerMessage, { t: 'welcome' }>;
    const manager: [Record<string, unknown>, RegExp][] = [
      [{ ...welcome, id: 3 }, /'welcome'.*id must be a string, not a number/],
      [{ ...welcome, job: undefined }, /job must be a map, not missing/],
      [{ ...welcome, job: { ...JOB, v: 2 } }, /job version 2/],
      [{ ...welcome, job: { ...JOB, src: 5 } }, /job: src must be a string/],
      [{ ...welcome, job: { ...JOB, filter: { ...JOB.filter, rules: 'x' } } }, /filter.rules must be an array/],
      [{ ...welcome, env: { A: 1 } }, /env.A must be a string, not a number/],
      [{ ...welcome, threads: 0 }, /threads must be at least 1, not 0/],
      [{ ...welcome, threads: 1.5 }, /threads must be an integer/],
      [{ ...welcome, rate: -1 }, /rate must not be negative/],
      [{ ...welcome, beatMs: 0 }, /beatMs must be positive/],
      [{ ...welcome, deadMs: 'soon' }, /deadMs must be a finite number, not a string/],
      [{ t: 'batch', batch: null }, /'batch'.*req must be a finite number, not missing/],
      [{ t: 'batch', req: 1 }, /batch must be a map or null, not missing/],
      [{ t: 'batch', req: 1, batch: { v: 2, tasks: [] } }, /batch version 2/],
      [{ t: 'batch', req: 1, batch: { v: 1, tasks: {} } }, /batch.tasks must be an array/],
      [{ t: 'rate', rate: 'fast' }, /'rate'.*rate must be a finite number, not a string/],
      [{ t: 'refuse' }, /'refuse'.*reason must be a string, not missing/],
      [{ t: 'end', reason: 1 }, /'end'.*reason must be a string/],
    ];
    for (const [value, message] of manager) expect(protocolError(() => decodeManagerMessage(raw(value))).message).toMatch(message);
    const hello = WORKER_MESSAGES[0] as Extract<WorkerMessage, { t: 'hello' }>;
    const worker: [Record<string, unknown>, RegExp][] = [
      [{ ...hello, token: undefined }, /'hello'.*token must be a string, not missing/],
      [{ ...hello, worker: 'me' }, /worker must be a map, not a string/],
      [{ ...hello, worker: { ...hello.worker, pid: 'x' } }, /worker: pid must be a finite number/],
      [{ ...hello, worker: { ...hello.worker, name: 3 } }, /worker: name must be a string/],
      [{ t: 'want', req: 1, tasks: 0, bytes: 0 }, /tasks must be at least 1/],
      [{ t: 'want', req: 1.5, tasks: 1, bytes: 0 }, /req must be an integer/],
      [{ t: 'want', req: 1, tasks: 1, bytes: -1 }, /bytes must not be negative/],
      [{ t: 'results', results: 'none' }, /results must be an array, not a string/],
      [{ t: 'beat' }, /'beat'.*bytes must be a finite number, not missing/],
      [{ t: 'log', level: 'fatal', message: 'm' }, /level must be error, warn, info or debug/],
      [{ t: 'log', level: 'info' }, /message must be a string/],
    ];
    for (const [value, message] of worker) expect(protocolError(() => decodeWorkerMessage(raw(value))).message).toMatch(message);
  });

  it('checks every task of a batch with validateTask, saying which one', () => {
    const good = { v: 1, id: 1, op: 'copy', entry: { key: 'k', size: 1, mtime: 1, isDir: false } };
    const part = { v: 1, id: 2, op: 'copyPart', entry: { key: 'k', size: 10, mtime: 1, isDir: false }, upload: { key: 'k', uploadId: 'u' }, part: 1, first: 0, last: 9 };
    expect(decodeManagerMessage(raw({ t: 'batch', req: 1, batch: { v: 1, tasks: [good, part] } }))).toMatchObject({ batch: { tasks: [good, part] } });
    const cases: [unknown, RegExp][] = [
      [{ ...good, v: 2 }, /batch.tasks\[1\]: task version 2 is not spoken here/],
      [{ ...good, op: 'format' }, /batch.tasks\[1\]: unknown task op "format"/],
      [{ ...good, id: 'one' }, /batch.tasks\[1\]: a task needs an integer id/],
      [{ ...good, entry: { key: 'k' } }, /batch.tasks\[1\]: task 1 has a malformed entry/],
      ['copy k', /batch.tasks\[1\]: a task must be an object/],
      // A part names its upload, and lies within the object.
      [{ ...part, upload: undefined }, /batch.tasks\[1\]: task 2 \(copyPart\) names no upload/],
      [{ ...part, upload: { key: 'k', uploadId: '' } }, /task 2 \(copyPart\) names no upload/],
      [{ ...part, part: 0 }, /task 2 \(copyPart\) has a malformed part: number 0/],
      [{ ...part, first: 5, last: 4 }, /task 2 \(copyPart\) has a malformed part: number 1, bytes 5-4 of 10/],
      [{ ...part, last: 10 }, /malformed part: number 1, bytes 0-10 of 10/],
      [{ ...part, first: 0.5 }, /malformed part/],
    ];
    for (const [task, message] of cases) {
      expect(protocolError(() => decodeManagerMessage(raw({ t: 'batch', req: 1, batch: { v: 1, tasks: [good, task] } }))).message).toMatch(message);
    }
  });

  it('checks every result with validateResult, saying which one', () => {
    const good = { v: 1, id: 1, outcome: { result: 'copied', bytes: 1, checked: false } };
    const cases: [unknown, RegExp][] = [
      [{ ...good, v: 0 }, /results\[1\]: task result version 0/],
      [{ v: 1, id: 2, outcome: { result: 'moved', bytes: 1, checked: false } }, /results\[1\]: task result 2 has a malformed outcome/],
      [{ v: 1, id: 2 }, /results\[1\]: task result 2 has neither an outcome nor an error/],
      [{ v: 1, id: 2, error: { code: 'X' } }, /results\[1\]: task result 2 has neither/],
      [{ ...good, outcome: { ...good.outcome, part: { partNumber: 0, etag: 'e', size: 1 } } }, /results\[1\]: task result 1 has a malformed part/],
      [{ ...good, outcome: { ...good.outcome, part: { partNumber: 1, size: 1 } } }, /task result 1 has a malformed part/],
      [{ ...good, outcome: { ...good.outcome, part: 'e1' } }, /task result 1 has a malformed part/],
    ];
    for (const [result, message] of cases) expect(protocolError(() => decodeWorkerMessage(raw({ t: 'results', results: [good, result] }))).message).toMatch(message);
  });

  it('refuses a welcome or hello of another protocol version, naming both versions', () => {
    const welcome = protocolError(() => decodeManagerMessage(raw({ t: 'welcome', v: PROTOCOL_VERSION + 1, shape: 'new' })));
    expect(welcome.message).toContain(`version ${PROTOCOL_VERSION + 1}`);
    expect(welcome.message).toContain(`version ${PROTOCOL_VERSION}`);
    expect(welcome.versionMismatch).toBe(true);
    const hello = protocolError(() => decodeWorkerMessage(raw({ t: 'hello', v: 0, token: 't', worker: {} })));
    expect(hello.message).toMatch(/worker speaks protocol version 0, this manager speaks version 2/);
    expect(hello.versionMismatch).toBe(true);
    expect(protocolError(() => decodeWorkerMessage(raw({ t: 'want' }))).versionMismatch).toBe(false);
  });

  it('refuses a frame larger than MAX_FRAME_BYTES, before decoding it', () => {
    const big = Buffer.alloc(MAX_FRAME_BYTES + 1);
    expect(protocolError(() => decodeWorkerMessage(big)).message).toMatch(new RegExp(`${MAX_FRAME_BYTES + 1} bytes exceeds the limit of ${MAX_FRAME_BYTES}`));
    expect(protocolError(() => encodeMessage({ t: 'log', level: 'info', message: 'x'.repeat(MAX_FRAME_BYTES) })).message).toMatch(/exceeds the frame limit/);
  });

  it('never quotes a frame’s content in its errors (it may hold secrets)', () => {
    const frame = Buffer.concat([encodeMessage(MANAGER_MESSAGES[0]!), Buffer.from([0x01])]);
    const err = protocolError(() => decodeManagerMessage(frame));
    expect(err.message).not.toContain('SK');
    expect(protocolError(() => decodeManagerMessage(raw({ t: 'refuse', reason: { secret: 'SK' } }))).message).not.toContain('SK');
  });

  it('crosses a process boundary as FERRY_PROTOCOL', () => {
    const back = fromWire(toWire(new ProtocolError('bad frame')));
    expect(back).toBeInstanceOf(ProtocolError);
    expect(back).toMatchObject({ code: 'FERRY_PROTOCOL', retry: 'fatal', message: 'bad frame' });
  });
});
