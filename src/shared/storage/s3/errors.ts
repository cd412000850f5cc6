import {
  AbortedError,
  FatalError,
  FerryError,
  NotFoundError,
  PermissionDeniedError,
  retryClassOf,
  ThrottledError,
  TransientError,
} from '../../errors.js';

/** What a failed call was doing: for messages such as `s3 HEAD my-bucket/a/b.txt: ...`. */
export interface CallSite {
  op: string;
  bucket: string;
  key?: string;
  /** The service URL, named when a connection is refused. */
  endpoint: string;
  signal?: AbortSignal;
}

interface SdkError {
  name?: string;
  code?: string;
  Code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $response?: { statusCode?: number };
}

const DENIED = new Set([
  'AccessDenied',
  'SignatureDoesNotMatch',
  'InvalidAccessKeyId',
  'InvalidToken',
  'ExpiredToken',
  'TokenRefreshRequired',
  'AllAccessDisabled',
  'AccountProblem',
  'InvalidSecurity',
  'Forbidden',
  'Unauthorized',
]);
const THROTTLED = new Set(['SlowDown', 'Throttling', 'ThrottlingException', 'TooManyRequests', 'RequestLimitExceeded', 'ServiceUnavailable', 'TooManyRequestsException']);
const TRANSIENT = new Set(['InternalError', 'RequestTimeout', 'RequestTimeoutException', 'BadGateway', 'GatewayTimeout', 'OperationAborted', 'TimeoutError']);
const HINTS: Record<string, string> = {
  SignatureDoesNotMatch: 'check the secret key',
  InvalidAccessKeyId: 'the service does not know this access key',
  ExpiredToken: 'the session token has expired',
  RequestTimeTooSkewed: "this machine's clock is off; correct it",
  PermanentRedirect: 'the bucket is in another region or needs another endpoint: give it as BUCKET.s3.REGION.amazonaws.com',
};

function where(site: CallSite): string {
  return `s3 ${site.op} ${site.bucket}${site.key === undefined ? '' : '/' + site.key}`;
}

/**
 * Turn whatever the SDK or the network threw into a ferry error naming the operation, bucket and
 * key. HEAD responses have no body, so the status code decides before the error name does.
 */
export function mapS3Error(err: unknown, site: CallSite): FerryError {
  if (err instanceof FerryError) return err;
  const e = (err ?? {}) as SdkError;
  const at = where(site);
  if (site.signal?.aborted) return new AbortedError(`${at}: interrupted`);
  // The store aborts a request itself when its body fails; the reason is the real error.
  const cause = (err as { cause?: unknown } | null)?.cause;
  if (e.name === 'AbortError' && cause instanceof FerryError) return cause;
  if (e.name === 'AbortError') return new AbortedError(`${at}: interrupted`);
  const status = e.$metadata?.httpStatusCode ?? e.$response?.statusCode;
  const name = e.Code ?? (e.name && e.name !== 'Error' && e.name !== 'S3ServiceException' ? e.name : undefined);
  const sysCode = typeof e.code === 'string' ? e.code : undefined;
  const options = { cause: err };

  if (status === undefined) {
    // No HTTP response: a network failure, a timeout, or a client-side problem.
    if (sysCode === 'ECONNREFUSED') return new TransientError(`${at}: connection refused by ${site.endpoint} (ECONNREFUSED)`, options);
    if (sysCode === 'ENOTFOUND') return new FatalError(`${at}: cannot resolve the host of ${site.endpoint} (ENOTFOUND)`, options);
    if (e.name === 'CredentialsProviderError') {
      return new PermissionDeniedError(`${at}: no credentials found: put them in the address (s3://AK:SK@...), set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or configure an AWS profile`, options);
    }
    if (e.name === 'TimeoutError' || sysCode === 'ETIMEDOUT' || sysCode === 'ECONNRESET' || /socket hang up/i.test(e.message ?? '')) {
      return new TransientError(`${at}: ${e.message ?? e.name} (${sysCode ?? e.name ?? 'network'}) talking to ${site.endpoint}`, options);
    }
    if (retryClassOf(err) === 'transient') return new TransientError(`${at}: ${e.message ?? sysCode} (${sysCode}) talking to ${site.endpoint}`, options);
    return new FatalError(`${at}: ${e.message ?? String(err)}`, options);
  }

  const tag = `(${status}${name ? ' ' + name : ''})`;
  const hintKey = status === 301 ? 'PermanentRedirect' : name;
  const hint = hintKey && HINTS[hintKey] ? `: ${HINTS[hintKey]}` : '';
  if (name === 'NoSuchBucket') return new NotFoundError(`${at}: the bucket ${site.bucket} does not exist ${tag}`, options);
  if (name === 'NoSuchKey' || name === 'NoSuchUpload' || status === 404) return new NotFoundError(`${at}: not found ${tag}`, options);
  if (status === 401 || status === 403 || (name !== undefined && DENIED.has(name))) return new PermissionDeniedError(`${at}: access denied ${tag}${hint}`, options);
  if (status === 503 || status === 429 || (name !== undefined && THROTTLED.has(name))) return new ThrottledError(`${at}: the service asks to slow down ${tag}`, options);
  if (status >= 500 || (name !== undefined && TRANSIENT.has(name))) return new TransientError(`${at}: service error ${tag}`, options);
  const detail = e.message && e.message !== name && e.message !== 'UnknownError' ? ` ${e.message}` : '';
  return new FatalError(`${at}: failed ${tag}${hint}${detail ? ':' + detail : ''}`, options);
}

/**
 * A conditional create (If-None-Match: *) that found the key there: 412 PreconditionFailed, or 409
 * ConditionalRequestConflict when another write of the key was under way at the same moment (S3
 * settles racing conditional writes by refusing all but one). `err` as mapS3Error left it.
 */
export function lostConditionalCreate(err: unknown): boolean {
  const e = ((err instanceof FerryError ? err.cause : err) ?? {}) as SdkError;
  const status = e.$metadata?.httpStatusCode ?? e.$response?.statusCode;
  const name = e.Code ?? e.name;
  return status === 412 || name === 'PreconditionFailed' || (status === 409 && name === 'ConditionalRequestConflict');
}
