import { addExtension, Packr } from 'msgpackr';
import { ProtocolError } from '../errors.js';
import { decodeKey, encodeKey, hasRawBytes } from '../storage/keys.js';
import { validateResult, validateTask } from '../transfer/task.js';
import { MAX_FRAME_BYTES, PROTOCOL_VERSION, type ManagerMessage, type WorkerInfo, type WorkerMessage } from './messages.js';

export { ProtocolError };

/**
 * msgpack as both ends of a run speak it: maps are plain objects and nothing else. No records or
 * shared structures (msgpackr's extension 0x72), whose definitions live in the encoder that made
 * them, so a worker built from other sources than its manager still reads every frame. 64-bit
 * integers come back as numbers (sizes and times are safe integers).
 */
const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });

/**
 * A string holding raw bytes (a key of a name that is not valid UTF-8: lone surrogates U+DC80–U+DCFF,
 * see storage/keys.ts). msgpack strings are UTF-8, which has no lone surrogates: such a string
 * would arrive as U+FFFD, and a worker would write a mangled name. It crosses as its bytes in an
 * extension instead, and is decoded back to the same key.
 */
class RawString {
  constructor(readonly bytes: Buffer) {}
}
const RAW_STRING_EXT = 82;
addExtension({ Class: RawString, type: RAW_STRING_EXT, pack: (r: RawString) => r.bytes, unpack: (bytes: Buffer) => decodeKey(bytes) });

/** The message with every string that holds raw bytes as a RawString; the message itself when there is none (the usual case). */
function withRawStrings(v: unknown): unknown {
  if (typeof v === 'string') {
    if (!hasRawBytes(v)) return v;
    try {
      return new RawString(encodeKey(v));
    } catch {
      // Lone surrogates that name no bytes (not a key a store made): sent as UTF-8 can carry them, with U+FFFD.
      return v;
    }
  }
  if (typeof v !== 'object' || v === null || Buffer.isBuffer(v) || v instanceof Uint8Array) return v;
  if (!holdsRawStrings(v)) return v;
  if (Array.isArray(v)) return v.map(withRawStrings);
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, withRawStrings(x)]));
}

function holdsRawStrings(v: unknown): boolean {
  if (typeof v === 'string') return hasRawBytes(v);
  if (typeof v !== 'object' || v === null || Buffer.isBuffer(v) || v instanceof Uint8Array) return false;
  if (Array.isArray(v)) return v.some(holdsRawStrings);
  for (const x of Object.values(v)) if (holdsRawStrings(x)) return true;
  return false;
}

/** A frame as ws hands it over (its RawData), or any byte buffer. */
export type Frame = Uint8Array | ArrayBuffer | readonly Uint8Array[];

/** One message, as one binary frame. Refuses a message that would exceed MAX_FRAME_BYTES (the peer would drop the connection). */
export function encodeMessage(message: WorkerMessage | ManagerMessage): Buffer {
  const frame = packr.pack(withRawStrings(message));
  if (frame.length > MAX_FRAME_BYTES) throw new ProtocolError(`a '${message.t}' message of ${frame.length} bytes exceeds the frame limit of ${MAX_FRAME_BYTES} bytes`);
  return frame;
}

/**
 * A frame from the manager, checked: throws ProtocolError naming what is wrong. Fields this build
 * does not know pass through unchecked (a later build's optional additions).
 */
export function decodeManagerMessage(frame: Frame): ManagerMessage {
  const m = unpackFrame(frame, 'manager');
  const what = `the manager's '${m.t}' message`;
  switch (m.t) {
    case 'welcome':
      // The version first: another version's welcome may be shaped otherwise.
      if (m['v'] !== PROTOCOL_VERSION) {
        throw new ProtocolError(`the manager speaks protocol version ${JSON.stringify(m['v'])}, this worker speaks version ${PROTOCOL_VERSION}: run the same ferry version on both`, { versionMismatch: true });
      }
      str(m, 'id', what);
      jobSpec(m['job'], what);
      stringRecord(m, 'env', what);
      count(m, 'threads', what, 1);
      nonNegative(m, 'rate', what);
      positive(m, 'beatMs', what);
      positive(m, 'deadMs', what);
      break;
    case 'batch': {
      integer(m, 'req', what);
      const b = m['batch'];
      if (b === null) break;
      if (!isObject(b)) throw new ProtocolError(`${what}: batch must be a map or null, not ${describe(b)}`);
      if (b['v'] !== 1) throw new ProtocolError(`${what}: batch version ${JSON.stringify(b['v'])} is not spoken here (this build speaks 1)`);
      const tasks = b['tasks'];
      if (!Array.isArray(tasks)) throw new ProtocolError(`${what}: batch.tasks must be an array, not ${describe(tasks)}`);
      tasks.forEach((t, i) => checked(() => validateTask(t), `${what}: batch.tasks[${i}]`));
      break;
    }
    case 'rate':
      nonNegative(m, 'rate', what);
      break;
    case 'beat':
      break;
    case 'refuse':
    case 'end':
      str(m, 'reason', what);
      break;
    default:
      throw new ProtocolError(`unknown manager message type ${JSON.stringify(m.t)}`);
  }
  return m as unknown as ManagerMessage;
}

/** A frame from a worker, checked: throws ProtocolError naming what is wrong. Unknown fields pass through. */
export function decodeWorkerMessage(frame: Frame): WorkerMessage {
  const m = unpackFrame(frame, 'worker');
  const what = `the worker's '${m.t}' message`;
  switch (m.t) {
    case 'hello':
      if (m['v'] !== PROTOCOL_VERSION) {
        throw new ProtocolError(`the worker speaks protocol version ${JSON.stringify(m['v'])}, this manager speaks version ${PROTOCOL_VERSION}: run the same ferry version on both`, { versionMismatch: true });
      }
      str(m, 'token', what);
      workerInfo(m['worker'], what);
      break;
    case 'want':
      integer(m, 'req', what);
      count(m, 'tasks', what, 1);
      nonNegative(m, 'bytes', what);
      break;
    case 'results': {
      const results = m['results'];
      if (!Array.isArray(results)) throw new ProtocolError(`${what}: results must be an array, not ${describe(results)}`);
      results.forEach((r, i) => checked(() => validateResult(r), `${what}: results[${i}]`));
      break;
    }
    case 'beat':
      nonNegative(m, 'bytes', what);
      break;
    case 'log': {
      const level = m['level'];
      if (level !== 'error' && level !== 'warn' && level !== 'info' && level !== 'debug') throw new ProtocolError(`${what}: level must be error, warn, info or debug, not ${describe(level)}`);
      str(m, 'message', what);
      break;
    }
    default:
      throw new ProtocolError(`unknown worker message type ${JSON.stringify(m.t)}`);
  }
  return m as unknown as WorkerMessage;
}

type Fields = Record<string, unknown>;

function unpackFrame(frame: Frame, from: 'manager' | 'worker'): Fields & { t: string } {
  const bytes = Array.isArray(frame) ? Buffer.concat(frame as readonly Uint8Array[]) : frame instanceof ArrayBuffer ? new Uint8Array(frame) : (frame as Uint8Array);
  if (bytes.byteLength > MAX_FRAME_BYTES) throw new ProtocolError(`a ${from} frame of ${bytes.byteLength} bytes exceeds the limit of ${MAX_FRAME_BYTES} bytes`);
  if (bytes.byteLength === 0) throw new ProtocolError(`an empty ${from} frame is not a message`);
  let m: unknown;
  try {
    m = packr.unpack(bytes);
  } catch (err) {
    // msgpackr's message may quote what it decoded, secrets included: it stays in `cause` only.
    throw new ProtocolError(`a ${from} frame of ${bytes.byteLength} bytes is not one msgpack value`, { cause: err });
  }
  if (!isObject(m)) throw new ProtocolError(`a ${from} message must be a map, not ${describe(m)}`);
  if (typeof m['t'] !== 'string') throw new ProtocolError(`a ${from} message needs a string t (its type), not ${describe(m['t'])}`);
  return m as Fields & { t: string };
}

/** A check that throws another error class (validateTask, validateResult), as a ProtocolError saying where. */
function checked<T>(check: () => T, where: string): T {
  try {
    return check();
  } catch (err) {
    throw new ProtocolError(`${where}: ${(err as Error).message}`, { cause: err });
  }
}

function isObject(x: unknown): x is Fields {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !(x instanceof Uint8Array);
}

/** What a value is, for messages: its type, never its content (it may be a secret). */
function describe(x: unknown): string {
  if (x === null) return 'null';
  if (x === undefined) return 'missing';
  if (Array.isArray(x)) return 'an array';
  if (x instanceof Uint8Array) return 'binary data';
  if (typeof x === 'object') return 'a map';
  return `a ${typeof x}`;
}

function str(m: Fields, field: string, what: string): string {
  const x = m[field];
  if (typeof x !== 'string') throw new ProtocolError(`${what}: ${field} must be a string, not ${describe(x)}`);
  return x;
}

function num(m: Fields, field: string, what: string): number {
  const x = m[field];
  if (typeof x !== 'number' || !Number.isFinite(x)) throw new ProtocolError(`${what}: ${field} must be a finite number, not ${typeof x === 'number' ? x : describe(x)}`);
  return x;
}

function integer(m: Fields, field: string, what: string): number {
  const x = num(m, field, what);
  if (!Number.isSafeInteger(x)) throw new ProtocolError(`${what}: ${field} must be an integer, not ${x}`);
  return x;
}

function count(m: Fields, field: string, what: string, min: number): number {
  const x = integer(m, field, what);
  if (x < min) throw new ProtocolError(`${what}: ${field} must be at least ${min}, not ${x}`);
  return x;
}

function nonNegative(m: Fields, field: string, what: string): number {
  const x = num(m, field, what);
  if (x < 0) throw new ProtocolError(`${what}: ${field} must not be negative, not ${x}`);
  return x;
}

function positive(m: Fields, field: string, what: string): number {
  const x = num(m, field, what);
  if (x <= 0) throw new ProtocolError(`${what}: ${field} must be positive, not ${x}`);
  return x;
}

function bool(m: Fields, field: string, what: string): boolean {
  const x = m[field];
  if (typeof x !== 'boolean') throw new ProtocolError(`${what}: ${field} must be a boolean, not ${describe(x)}`);
  return x;
}

function map(m: Fields, field: string, what: string): Fields {
  const x = m[field];
  if (!isObject(x)) throw new ProtocolError(`${what}: ${field} must be a map, not ${describe(x)}`);
  return x;
}

function stringRecord(m: Fields, field: string, what: string): Record<string, string> {
  const x = map(m, field, what);
  for (const [k, v] of Object.entries(x)) if (typeof v !== 'string') throw new ProtocolError(`${what}: ${field}.${k} must be a string, not ${describe(v)}`);
  return x as Record<string, string>;
}

function workerInfo(x: unknown, what: string): void {
  if (!isObject(x)) throw new ProtocolError(`${what}: worker must be a map, not ${describe(x)}`);
  const w = `${what}: worker`;
  for (const field of ['host', 'node', 'arch', 'ferry'] satisfies (keyof WorkerInfo)[]) str(x, field, w);
  integer(x, 'pid', w);
  if (x['name'] !== undefined) str(x, 'name', w);
}

/**
 * The parts of a JobSpec (job.ts) that resolveJob reads without checking them again. The options travel
 * as the manager parsed them; a store refuses a bad one when it opens.
 */
function jobSpec(x: unknown, what: string): void {
  if (!isObject(x)) throw new ProtocolError(`${what}: job must be a map, not ${describe(x)}`);
  const w = `${what}: job`;
  if (x['v'] !== 1) throw new ProtocolError(`${w} version ${JSON.stringify(x['v'])} is not spoken here (this build speaks 1)`);
  str(x, 'src', w);
  str(x, 'dst', w);
  map(x, 'options', w);
  const f = map(x, 'filter', w);
  if (!Array.isArray(f['rules'])) throw new ProtocolError(`${w}: filter.rules must be an array, not ${describe(f['rules'])}`);
  bool(f, 'matchFullPath', `${w}: filter`);
  map(f, 'limits', `${w}: filter`);
  num(x, 'now', w);
  bool(x, 'noHttps', w);
}
