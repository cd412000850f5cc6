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
 */
export type RetryClass = 'notFound' | 'denied' | 'throttled' | 'transient' | 'fatal';

export abstract class FerryError extends Error {
  abstract readonly code: string;
  abstract readonly retry: RetryClass;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

export class NotFoundError extends FerryError {
  readonly code = 'FERRY_NOT_FOUND' as const;
  readonly retry = 'notFound' as const;
}
export class PermissionDeniedError extends FerryError {
  readonly code = 'FERRY_PERMISSION_DENIED' as const;
  readonly retry = 'denied' as const;
}
export class ThrottledError extends FerryError {
  readonly code = 'FERRY_THROTTLED' as const;
  readonly retry = 'throttled' as const;
}
export class TransientError extends FerryError {
  readonly code = 'FERRY_TRANSIENT' as const;
  readonly retry = 'transient' as const;
}
export class FatalError extends FerryError {
  readonly code: string = 'FERRY_FATAL';
  readonly retry = 'fatal' as const;
}
export class ListOrderError extends FerryError {
  readonly code = 'FERRY_LIST_ORDER' as const;
  readonly retry = 'fatal' as const;
  constructor(where: string, previous: string, current: string) {
    super(`listing of ${where} is out of order: ${JSON.stringify(current)} came after ${JSON.stringify(previous)}`);
  }
}
export class UsageError extends FerryError {
  readonly code = 'FERRY_USAGE' as const;
  readonly retry = 'fatal' as const;
}
export class UnsupportedSchemeError extends FerryError {
  readonly code = 'FERRY_UNSUPPORTED_SCHEME' as const;
  readonly retry = 'fatal' as const;
}
export class NotSupportedYetError extends FerryError {
  readonly code = 'FERRY_NOT_SUPPORTED_YET' as const;
  readonly retry = 'fatal' as const;
}
export class ChecksumMismatchError extends FerryError {
  readonly code = 'FERRY_CHECKSUM_MISMATCH' as const;
  readonly retry = 'fatal' as const;
}
export class SourceChangedError extends FerryError {
  readonly code = 'FERRY_SOURCE_CHANGED' as const;
  readonly retry = 'transient' as const;
}
export class AbortedError extends FerryError {
  readonly code = 'FERRY_ABORTED' as const;
  readonly retry = 'fatal' as const;
  constructor(message = 'interrupted') {
    super(message);
  }
}

export class UnsafePathError extends FerryError {
  readonly code = 'FERRY_UNSAFE_PATH' as const;
  readonly retry = 'fatal' as const;
}
export class InTheWayError extends FerryError {
  readonly code = 'FERRY_IN_THE_WAY' as const;
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
