/**
 * Every error ferry raises carries a literal `code` (tests and scripts read it) and a `retry` class
 * (the retry policy reads only that). The codes:
 *
 * | code                       | class       | meaning                                              |
 * |----------------------------|-------------|------------------------------------------------------|
 * | FERRY_NOT_FOUND            | notFound    | the key, bucket or path does not exist               |
 * | FERRY_PERMISSION_DENIED    | denied      | the store refused the credentials or the operation   |
 * | FERRY_THROTTLED            | throttled   | the store asked us to slow down (503, SlowDown)      |
 * | FERRY_TRANSIENT            | transient   | timeouts, resets, refused connections, 5xx           |
 * | FERRY_FATAL                | fatal       | anything else a store reports                        |
 * | FERRY_LIST_ORDER           | fatal       | a listing came back out of UTF-8 key order           |
 * | FERRY_USAGE                | fatal       | a bad command-line argument or address               |
 * | FERRY_UNSUPPORTED_SCHEME   | fatal       | an address scheme ferry does not know                |
 * | FERRY_NOT_SUPPORTED_YET    | fatal       | a scheme or feature that a later version brings      |
 * | FERRY_CHECKSUM_MISMATCH    | fatal       | source and destination differ after a copy           |
 * | FERRY_SOURCE_CHANGED       | transient   | the source changed while it was being copied         |
 * | FERRY_ABORTED              | fatal       | the run was interrupted                              |
 * | FERRY_UNSAFE_PATH          | fatal       | a key that would leave the store's root ('..', '/x', |
 * |                            |             | 'a//b') or a write that would go through a symlink   |
 * | FERRY_IN_THE_WAY           | fatal       | a directory with content (or a symlink) stands where |
 * |                            |             | a file, or a file's parent directory, must go        |
 * | FERRY_NOT_EMPTY            | fatal       | deleting a directory that still holds entries        |
 * | FERRY_PROTOCOL             | fatal       | a manager<->worker frame that is not a valid message |
 * |                            |             | of this build's protocol (or of its version)         |
 *
 * Errors cross process boundaries in a wire form (toWire/fromWire) that keeps code and class.
 */
export type RetryClass = 'notFound' | 'denied' | 'throttled' | 'transient' | 'fatal';

/**
 * Marks ferry's errors. A process can hold two copies of this module (the CLI bundle and a backend
 * chunk, or a worker's bundle): `instanceof` then asks the brand and the code, not the prototype.
 */
const BRAND = Symbol.for('ferry.error');

export abstract class FerryError extends Error {
  abstract readonly code: string;
  abstract readonly retry: RetryClass;
  /** The code every instance of the class carries; absent on classes whose instances vary. */
  static readonly classCode: string | undefined;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    Object.defineProperty(this, BRAND, { value: true });
  }

  static override [Symbol.hasInstance](x: unknown): boolean {
    if (typeof x !== 'object' || x === null || !(BRAND in x)) return false;
    if (Function.prototype[Symbol.hasInstance].call(this, x)) return true;
    if (this === FerryError) return true;
    const want = (this as { classCode?: string }).classCode;
    return want !== undefined && (x as unknown as FerryError).code === want;
  }
}

/** An error as it crosses a process boundary (the cluster protocol): what `fromWire` rebuilds. */
export interface WireError {
  code: string;
  retry: RetryClass;
  message: string;
}

export function toWire(err: unknown): WireError {
  if (err instanceof FerryError) return { code: err.code, retry: err.retry, message: err.message };
  const retry = retryClassOf(err);
  const system = (err as { code?: unknown } | null)?.code;
  return { code: typeof system === 'string' ? system : 'FERRY_FATAL', retry, message: (err as Error | null)?.message ?? String(err) };
}

/** The ferry error a wire form stands for: its own class when the code names one, its retry class kept. */
export function fromWire(w: WireError): FerryError {
  const known = BY_CODE.get(w.code);
  if (known) return new known(w.message);
  return new RemoteError(w.message, w.code, w.retry);
}

/** An error from another process whose code this one does not know: code and retry class as they came. */
export class RemoteError extends FerryError {
  constructor(
    message: string,
    readonly code: string,
    readonly retry: RetryClass,
  ) {
    super(message);
  }
}

export class NotFoundError extends FerryError {
  readonly code = 'FERRY_NOT_FOUND' as const;
  static override readonly classCode = 'FERRY_NOT_FOUND';
  readonly retry = 'notFound' as const;
}
export class PermissionDeniedError extends FerryError {
  readonly code = 'FERRY_PERMISSION_DENIED' as const;
  static override readonly classCode = 'FERRY_PERMISSION_DENIED';
  readonly retry = 'denied' as const;
}
export class ThrottledError extends FerryError {
  readonly code = 'FERRY_THROTTLED' as const;
  static override readonly classCode = 'FERRY_THROTTLED';
  readonly retry = 'throttled' as const;
}
export class TransientError extends FerryError {
  readonly code = 'FERRY_TRANSIENT' as const;
  static override readonly classCode = 'FERRY_TRANSIENT';
  readonly retry = 'transient' as const;
}
export class FatalError extends FerryError {
  readonly code: string = 'FERRY_FATAL';
  static override readonly classCode = 'FERRY_FATAL';
  readonly retry = 'fatal' as const;
}
export class ListOrderError extends FerryError {
  readonly code = 'FERRY_LIST_ORDER' as const;
  static override readonly classCode = 'FERRY_LIST_ORDER';
  readonly retry = 'fatal' as const;
  constructor(where: string, previous: string, current: string) {
    super(`listing of ${where} is out of order: ${JSON.stringify(current)} came after ${JSON.stringify(previous)}`);
  }
}
export class UsageError extends FerryError {
  readonly code = 'FERRY_USAGE' as const;
  static override readonly classCode = 'FERRY_USAGE';
  readonly retry = 'fatal' as const;
}
export class UnsupportedSchemeError extends FerryError {
  readonly code = 'FERRY_UNSUPPORTED_SCHEME' as const;
  static override readonly classCode = 'FERRY_UNSUPPORTED_SCHEME';
  readonly retry = 'fatal' as const;
}
export class NotSupportedYetError extends FerryError {
  readonly code = 'FERRY_NOT_SUPPORTED_YET' as const;
  static override readonly classCode = 'FERRY_NOT_SUPPORTED_YET';
  readonly retry = 'fatal' as const;
}
export class ChecksumMismatchError extends FerryError {
  readonly code = 'FERRY_CHECKSUM_MISMATCH' as const;
  static override readonly classCode = 'FERRY_CHECKSUM_MISMATCH';
  readonly retry = 'fatal' as const;
}
export class SourceChangedError extends FerryError {
  readonly code = 'FERRY_SOURCE_CHANGED' as const;
  static override readonly classCode = 'FERRY_SOURCE_CHANGED';
  readonly retry = 'transient' as const;
}
export class AbortedError extends FerryError {
  readonly code = 'FERRY_ABORTED' as const;
  static override readonly classCode = 'FERRY_ABORTED';
  readonly retry = 'fatal' as const;
  constructor(message = 'interrupted') {
    super(message);
  }
}

export class UnsafePathError extends FerryError {
  readonly code = 'FERRY_UNSAFE_PATH' as const;
  static override readonly classCode = 'FERRY_UNSAFE_PATH';
  readonly retry = 'fatal' as const;
}
export class InTheWayError extends FerryError {
  readonly code = 'FERRY_IN_THE_WAY' as const;
  static override readonly classCode = 'FERRY_IN_THE_WAY';
  readonly retry = 'fatal' as const;
}

/** The retry class of any error: ours carry it; Node's system errors are classified by errno. */
export function retryClassOf(err: unknown): RetryClass {
  if (err instanceof FerryError) return err.retry;
  const code = (err as { code?: unknown } | null)?.code;
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return 'notFound';
    case 'EACCES':
    case 'EPERM':
      return 'denied';
    case 'ETIMEDOUT':
    case 'ECONNRESET':
    case 'ECONNREFUSED':
    case 'ECONNABORTED':
    case 'EPIPE':
    case 'EAI_AGAIN':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EAGAIN':
    case 'EBUSY':
    case 'EINTR':
    case 'EIO':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'ERR_STREAM_PREMATURE_CLOSE':
      return 'transient';
    default:
      return 'fatal';
  }
}

export function isRetryable(err: unknown): boolean {
  const c = retryClassOf(err);
  return c === 'throttled' || c === 'transient';
}

/** Wrap a Node system error (fs, net) in the matching ferry error, naming what failed. */
export function fromSystemError(err: unknown, what: string): FerryError {
  if (err instanceof FerryError) return err;
  const e = err as NodeJS.ErrnoException;
  const detail = e?.code ? `${e.code}` : String((e as Error)?.message ?? e);
  switch (retryClassOf(err)) {
    case 'notFound':
      return new NotFoundError(`${what}: not found (${detail})`, { cause: err });
    case 'denied':
      return new PermissionDeniedError(`${what}: permission denied (${detail})`, { cause: err });
    case 'transient':
      return new TransientError(`${what}: ${e?.message ?? detail}`, { cause: err });
    default:
      return new FatalError(`${what}: ${e?.message ?? detail}`, { cause: err });
  }
}
export class NotEmptyError extends FerryError {
  readonly code = 'FERRY_NOT_EMPTY' as const;
  static override readonly classCode = 'FERRY_NOT_EMPTY';
  readonly retry = 'fatal' as const;
}

/**
 * A dump or archive that load refuses (src/manager/dump): malformed, of another format version,
 * truncated, or naming entries that would clash or leave the destination's root. Load writes
 * nothing when it throws this.
 */
export class InvalidDumpError extends FerryError {
  readonly code = 'FERRY_INVALID_DUMP' as const;
  static override readonly classCode = 'FERRY_INVALID_DUMP';
  readonly retry = 'fatal' as const;
}

/** put() with `ifAbsent` found the key already there (features.exclusiveCreate): nothing was written. */
export class AlreadyExistsError extends FerryError {
  readonly code = 'FERRY_ALREADY_EXISTS' as const;
  static override readonly classCode = 'FERRY_ALREADY_EXISTS';
  readonly retry = 'fatal' as const;
}

/**
 * A cluster frame that is not a valid message (src/shared/protocol/codec.ts). `versionMismatch`:
 * the peer speaks another protocol version (the manager closes with CLOSE.badVersion, not
 * badMessage); the message then names both versions.
 */
export class ProtocolError extends FerryError {
  readonly code = 'FERRY_PROTOCOL' as const;
  static override readonly classCode = 'FERRY_PROTOCOL';
  readonly retry = 'fatal' as const;
  readonly versionMismatch: boolean;
  constructor(message: string, options?: { cause?: unknown; versionMismatch?: boolean }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.versionMismatch = options?.versionMismatch ?? false;
  }
}

/** Classes by code, for fromWire (FatalError stands for FERRY_FATAL only). */
const BY_CODE = new Map<string, new (message: string) => FerryError>([
  ['FERRY_NOT_FOUND', NotFoundError],
  ['FERRY_PERMISSION_DENIED', PermissionDeniedError],
  ['FERRY_THROTTLED', ThrottledError],
  ['FERRY_TRANSIENT', TransientError],
  ['FERRY_FATAL', FatalError],
  ['FERRY_USAGE', UsageError],
  ['FERRY_UNSUPPORTED_SCHEME', UnsupportedSchemeError],
  ['FERRY_NOT_SUPPORTED_YET', NotSupportedYetError],
  ['FERRY_CHECKSUM_MISMATCH', ChecksumMismatchError],
  ['FERRY_SOURCE_CHANGED', SourceChangedError],
  ['FERRY_ABORTED', AbortedError],
  ['FERRY_UNSAFE_PATH', UnsafePathError],
  ['FERRY_IN_THE_WAY', InTheWayError],
  ['FERRY_NOT_EMPTY', NotEmptyError],
  ['FERRY_PROTOCOL', ProtocolError],
  ['FERRY_INVALID_DUMP', InvalidDumpError],
  ['FERRY_ALREADY_EXISTS', AlreadyExistsError],
]);

/** An interruption, in any of its forms: ours (FERRY_ABORTED), a DOMException from a signal, Node's ABORT_ERR. */
export function isAbortError(err: unknown): boolean {
  return err instanceof AbortedError || (err as Error | null)?.name === 'AbortError' || (err as { code?: string } | null)?.code === 'ABORT_ERR';
}
