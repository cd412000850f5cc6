import {
  FatalError,
  FerryError,
  NotFoundError,
  PermissionDeniedError,
  ThrottledError,
  TransientError,
} from '../../errors.js';

/** What ali-oss throws: a service error (XML `Code`, HTTP `status`) or a wrapped network error (status -1, -2). */
interface SdkError {
  name?: string;
  code?: string;
  status?: number;
  message?: string;
}

export interface Where {
  /** 'HEAD', 'GET', 'PUT', 'LIST', 'COPY', ... */
  op: string;
  bucket: string;
  /** The key, or a description of what was listed. */
  what: string;
  /** host:port the client talks to. */
  endpoint: string;
}

const NETWORK_NAMES = new Set(['RequestError', 'ResponseError', 'ConnectionTimeoutError', 'ResponseTimeoutError', 'SocketAssignTimeoutError', 'ConnectionError']);
const DENIED: Record<string, string> = {
  AccessDenied: 'access denied',
  SignatureDoesNotMatch: 'the signature was refused: check the secret key',
  InvalidAccessKeyId: 'the access key ID or security token is not valid',
  InvalidSecurityToken: 'the security token is not valid',
  SecurityTokenExpired: 'the security token has expired',
  RequestTimeTooSkewed: "this machine's clock and the server's differ by more than 15 minutes",
  UserDisable: 'the account is disabled',
};

/**
 * Classify an ali-oss failure. The message names the operation, bucket and key and never carries
 * credentials: ali-oss's own messages for network errors repeat the request URL and agent state,
 * so only their first clause is kept.
 */
export function ossError(err: unknown, where: Where): FerryError {
  if (err instanceof FerryError) return err;
  const e = (err ?? {}) as SdkError;
  const status = typeof e.status === 'number' ? e.status : undefined;
  // For a 404 without a body (HEAD, streamed GET) ali-oss invents NoSuchKey: the key or the bucket may be missing.
  const invented = e.code === 'NoSuchKey' && e.message === 'Object not exists';
  const code = typeof e.code === 'string' && /^[A-Za-z]+$/.test(e.code) && !invented ? e.code : undefined;
  const at = `oss ${where.op} ${where.bucket}${where.what ? '/' + where.what : ''}`;
  const tag = `(${[status !== undefined && status > 0 ? status : undefined, code].filter((x) => x !== undefined).join(' ')})`;
  const detail = firstClause(e.message);
  const options = { cause: err };

  if (status === -1 || status === -2 || (e.name !== undefined && NETWORK_NAMES.has(e.name))) {
    if (/timeout/i.test(e.name ?? '') || status === -2) return new TransientError(`${at}: timed out talking to ${where.endpoint} (${detail})`, options);
    if (/ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH/.test(detail)) return new TransientError(`${at}: cannot reach ${where.endpoint} (${detail})`, options);
    return new TransientError(`${at}: connection to ${where.endpoint} failed (${detail})`, options);
  }
  if (code === 'NoSuchBucket') return new NotFoundError(`${at}: bucket "${where.bucket}" does not exist at ${where.endpoint} ${tag}`, options);
  if (invented) return new NotFoundError(`${at}: not found (no such key, or no bucket "${where.bucket}") ${tag}`, options);
  if (code === 'NoSuchKey' || code === 'NoSuchUpload' || status === 404) return new NotFoundError(`${at}: not found ${tag}`, options);
  if ((code && DENIED[code]) || status === 401 || status === 403) {
    return new PermissionDeniedError(`${at}: ${(code && DENIED[code]) || 'access denied'} ${tag}`, options);
  }
  if (status === 503 || status === 429 || code === 'SlowDown' || code === 'Throttling') return new ThrottledError(`${at}: the server asks to slow down ${tag}`, options);
  if ((status !== undefined && status >= 500) || code === 'InternalError' || code === 'RequestTimeout') return new TransientError(`${at}: server error ${tag}${detail ? ': ' + detail : ''}`, options);
  if (status === undefined) return new FatalError(`${at}: ${detail || 'failed'}`, options);
  return new FatalError(`${at}: ${detail || 'failed'} ${tag}`, options);
}

/** urllib appends ", METHOD URL status (connected: ..., agent status: ...)\nheaders: {...}" to its messages. */
function firstClause(message: string | undefined): string {
  if (!message) return '';
  const line = message.split('\n')[0]!;
  const cut = line.search(/, (GET|PUT|POST|HEAD|DELETE) https?:\/\//);
  return (cut < 0 ? line : line.slice(0, cut)).replace(/, please increase the timeout.*$/, '').trim();
}

/** A write with x-oss-forbid-overwrite: true that found the key there (409 FileAlreadyExists), as ossError left it. */
export function refusedOverwrite(err: unknown): boolean {
  const e = ((err instanceof FerryError ? err.cause : err) ?? {}) as SdkError;
  return e.code === 'FileAlreadyExists';
}
