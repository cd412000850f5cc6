import { Agent as HttpAgent, type ClientRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import COS from 'cos-nodejs-sdk-v5';
import { AbortedError, AlreadyExistsError, FatalError, FerryError, NotFoundError, PermissionDeniedError, ThrottledError, TransientError } from '../../errors.js';

/**
 * One request to COS through the SDK, with the SDK's own retries taken out.
 *
 * cos-nodejs-sdk-v5 3.x has no option to turn retries off: `submitRequest` retries every request
 * without a stream body up to 3 more times on 5xx, network errors and clock skew (`tryTimes < 4`),
 * and may switch to a backup domain on the last try. Ferry's retry policy sits above the backend,
 * so each call here gets its own SDK instance (construction costs ~12 µs) whose `getAuthorization`
 * hook signs the first attempt and refuses any second one. What the first attempt got back (status,
 * XML error body, or socket error) is watched through a per-call view of the store's HTTP agent,
 * installed from the SDK's `before-send` event (cos-request honours `agent`), because the SDK drops
 * the first attempt's error when it decides to retry.
 */

export interface CosCredentials {
  secretId: string;
  secretKey: string;
  token?: string;
}

export interface CosClientConfig {
  bucket: string;
  region: string;
  /** `cos.REGION.myqcloud.com` or another COS domain; requests go to `BUCKET.ENDPOINT`. */
  endpoint: string;
  https: boolean;
  credentials: CosCredentials;
  /** Idle-socket and connect timeout of one request, in milliseconds. */
  timeoutMs: number;
  /** Connect to this `host:port` instead of the bucket's host, still sending the real Host header. */
  connectTo?: string;
  /** Keep-alive sockets per store. */
  maxSockets?: number;
}

/** What one operation is about, for messages: `cos HEAD bucket/key: ...`. */
export interface Operation {
  op: string;
  key?: string;
  /** Another object the operation names (the source of a copy). */
  detail?: string;
}

/** What the one attempt of a call saw on the wire. */
export interface Attempt {
  req?: ClientRequest;
  status?: number;
  /** Start of the response body when it may hold an XML error (always but for object data), at most 64 KiB. */
  errorBody: Buffer[];
  socketError?: NodeJS.ErrnoException;
  /** The body is object data (get): keep only what a non-2xx answer says. */
  streaming?: boolean;
  /** Called when the response headers arrive. */
  onResponse?: (res: IncomingMessage) => void;
}

type Done<T> = (err: COS.CosError, data: T) => void;

const ERROR_BODY_CAP = 64 << 10;

/** The SDK's error object: an Error or a plain object, extended with the response's status. */
interface SdkError {
  code?: string;
  message?: string;
  statusCode?: number;
  error?: { Code?: string; Message?: string } | string;
}

export class CosClient {
  readonly host: string;
  readonly #config: CosClientConfig;
  readonly #agent: HttpAgent;
  readonly #sdkOptions: COS.COSOptions;

  constructor(config: CosClientConfig) {
    this.#config = config;
    this.host = `${config.bucket}.${config.endpoint}`;
    const agentOptions = { keepAlive: true, maxSockets: config.maxSockets ?? 64 };
    this.#agent = config.https ? new HttpsAgent(agentOptions) : new HttpAgent(agentOptions);
    this.#sdkOptions = {
      Domain: `{Bucket}.${config.endpoint}`,
      Protocol: config.https ? 'https:' : 'http:',
      // Keys are sent as they are: without this the SDK drops a leading '/'.
      UseRawKey: true,
      // Timeouts are set on each request below, where the error they raise can be seen.
      Timeout: 0,
      KeepAlive: true,
      AutoSwitchHost: false,
      CorrectClockSkew: false,
      FollowRedirect: false,
      // A key made only of dots and slashes is a key, not a request for the bucket.
      ObjectKeySimplifyCheck: false,
      // The SDK accepts x-cos-copy-source only on domains it knows; ours reads any BUCKET.SVC.REGION.DOMAIN/KEY.
      CopySourceParser: (source: string) => {
        const m = /^([^./]+)\.[^./]+\.([^./]+)\.[^/]+\/(.+)$/.exec(source);
        return m ? { Bucket: m[1]!, Region: m[2]!, Key: m[3]! } : null;
      },
      ...(config.connectTo ? { Ip: config.connectTo } : {}),
    };
  }

  /** `BUCKET` or `BUCKET/KEY`, for messages. */
  where(key?: string): string {
    return key === undefined || key === '' ? this.#config.bucket : `${this.#config.bucket}/${key}`;
  }

  /**
   * Run one SDK call as exactly one HTTP attempt. `run` receives a fresh SDK instance, the callback
   * to pass to the SDK method, and the attempt record (get() reads the response from it).
   */
  call<T>(what: Operation, run: (cos: COS, done: Done<T>, attempt: Attempt) => void, options: { signal?: AbortSignal | undefined; attempt?: Attempt } = {}): Promise<T> {
    const attempt: Attempt = options.attempt ?? { errorBody: [] };
    const signal = options.signal;
    return new Promise<T>((resolve, reject) => {
      if (signal?.aborted) return reject(new AbortedError(`cos ${what.op} ${this.where(what.key)}: interrupted`));
      let settled = false;
      let refusedRetry = false;
      let signs = 0;
      const finish = (err: FerryError | null, data?: T): void => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve(data as T);
      };
      const onAbort = (): void => {
        attempt.req?.destroy();
        finish(new AbortedError(`cos ${what.op} ${this.where(what.key)}: interrupted`));
      };
      signal?.addEventListener('abort', onAbort, { once: true });

      const { secretId, secretKey, token } = this.#config.credentials;
      const cos = new COS({
        ...this.#sdkOptions,
        getAuthorization: (o, callback) => {
          if (++signs > 1) {
            // The SDK wants to retry: refuse, so its callback runs now with a signing error that
            // `done` below replaces with what the first attempt really got.
            refusedRetry = true;
            callback({} as COS.GetAuthorizationCallbackParams);
            return;
          }
          const auth = COS.getAuthorization({ SecretId: secretId, SecretKey: secretKey, Method: o.Method, Pathname: o.Pathname, Query: o.Query, Headers: o.Headers });
          // The typings know only a bare signature or STS keys; the SDK also takes a signature with its token.
          callback(token ? ({ Authorization: auth, SecurityToken: token } as unknown as COS.Credentials) : auth);
        },
      });
      cos.on('before-send', (opt: { agent?: unknown }) => {
        opt.agent = this.#watchingAgent(attempt);
      });
      const done: Done<T> = (err, data) => {
        if (!err) return finish(null, data);
        // An upload body fails with a ferry error of its own (the source ended early, or failed).
        if ((err as unknown) instanceof FerryError) return finish(err as unknown as FerryError);
        // A socket error and the SDK's callback can come in either order; let both land first.
        setImmediate(() => finish(this.toError(what, refusedRetry ? undefined : (err as SdkError), attempt)));
      };
      try {
        run(cos, done, attempt);
      } catch (err) {
        finish(new FatalError(`cos ${what.op} ${this.where(what.key)}: ${(err as Error).message}`, { cause: err }));
      }
    });
  }

  /** A view of the store's agent that records the attempt's request, response and socket errors. */
  #watchingAgent(attempt: Attempt): HttpAgent {
    const agent = this.#agent;
    const timeoutMs = this.#config.timeoutMs;
    return Object.create(agent, {
      addRequest: {
        value(req: ClientRequest, options: unknown) {
          attempt.req = req;
          // Connect and idle timeout: a silent server fails the call instead of hanging it.
          req.setTimeout(timeoutMs, () => {
            const e: NodeJS.ErrnoException = Object.assign(new Error(`no answer within ${timeoutMs / 1000} s`), { code: 'ETIMEDOUT' });
            attempt.socketError ??= e;
            req.destroy(e);
          });
          req.once('response', (res: IncomingMessage) => {
            if (res.statusCode !== undefined) attempt.status = res.statusCode;
            if (!attempt.streaming || (res.statusCode ?? 0) >= 300) {
              let n = 0;
              res.on('data', (c: Buffer) => {
                if (n < ERROR_BODY_CAP) attempt.errorBody.push(c);
                n += c.length;
              });
            }
            attempt.onResponse?.(res);
          });
          req.once('error', (e: NodeJS.ErrnoException) => {
            attempt.socketError ??= e;
          });
          (agent as unknown as { addRequest(req: ClientRequest, options: unknown): void }).addRequest(req, options);
        },
      },
    }) as HttpAgent;
  }

  /** Map what a failed call saw to ferry's error classes, naming the operation, bucket and key. */
  toError(what: Operation, sdkErr: SdkError | undefined, attempt: Attempt): FerryError {
    const where = `cos ${what.op} ${this.where(what.key)}${what.detail ? ` (${what.detail})` : ''}`;
    const body = Buffer.concat(attempt.errorBody).toString('utf8');
    const xmlError = /<Error>[\s\S]*<\/Error>/.exec(body)?.[0] ?? '';
    const xmlCode = /<Code>([^<]*)<\/Code>/.exec(xmlError)?.[1];
    const sdkCode = typeof sdkErr?.error === 'object' ? sdkErr.error.Code : undefined;
    const sdkSocket = sdkErr?.code !== undefined && /^E[A-Z_]+$/.test(sdkErr.code) ? (sdkErr as NodeJS.ErrnoException) : undefined;
    // A copy or a completion can fail inside a 200 answer: the code is in the body.
    const code = xmlCode ?? sdkCode;
    const status = attempt.status ?? sdkErr?.statusCode;

    if (sdkSocket || (attempt.socketError && code === undefined)) return this.#networkError(where, (sdkSocket ?? attempt.socketError)!);
    if (status === undefined || (status < 300 && code === undefined)) {
      return new FatalError(`${where}: ${sdkErr?.message ?? 'the request failed'}${status === undefined ? '' : ` (${status})`}`);
    }
    const tag = `(${status}${code ? ' ' + code : ''})`;
    // Only a write with x-cos-forbid-overwrite: true meets this: the key was there, nothing was written.
    if (code === 'FileAlreadyExists') return new AlreadyExistsError(`${where}: the key exists already ${tag}`);
    if (code === 'NoSuchBucket') {
      return new NotFoundError(`${where}: bucket ${JSON.stringify(this.#config.bucket)} does not exist in ${this.#config.region} ${tag}`);
    }
    if (code === 'NoSuchKey' || code === 'NoSuchUpload' || status === 404) {
      const what404 = code === 'NoSuchUpload' ? 'no such multipart upload' : what.detail && code === 'NoSuchKey' ? 'the source object does not exist' : 'not found';
      return new NotFoundError(`${where}: ${what404} ${tag}`);
    }
    if (status === 401 || status === 403) {
      const hint =
        code === 'SignatureDoesNotMatch' || code === 'InvalidAccessKeyId'
          ? '; check the SecretId/SecretKey (COS_SECRETID/COS_SECRETKEY) and the session token'
          : code === 'RequestTimeTooSkewed' || xmlError.includes('Request has expired')
            ? "; check this machine's clock"
            : '';
      return new PermissionDeniedError(`${where}: access denied ${tag}${hint}`);
    }
    if (status === 503 || status === 429 || code === 'SlowDown' || code === 'RequestLimitExceeded') {
      return new ThrottledError(`${where}: the service asks to slow down ${tag}`);
    }
    if (status >= 500 || code === 'InternalError' || code === 'ServiceUnavailable') {
      return new TransientError(`${where}: server error ${tag}`);
    }
    const message = /<Message>([^<]*)<\/Message>/.exec(xmlError)?.[1] ?? (typeof sdkErr?.error === 'object' ? sdkErr.error.Message : undefined);
    return new FatalError(`${where}: ${message ? message + ' ' : ''}${tag}`);
  }

  #networkError(where: string, e: NodeJS.ErrnoException): FerryError {
    const code = e.code ?? 'ERROR';
    const target = this.host + (this.#config.connectTo ? ` via ${this.#config.connectTo}` : '');
    switch (code) {
      case 'ECONNREFUSED':
        return new TransientError(`${where}: cannot connect to ${target} (${code})`, { cause: e });
      case 'ETIMEDOUT':
      case 'ESOCKETTIMEDOUT':
        return new TransientError(`${where}: no answer from ${target} within ${this.#config.timeoutMs / 1000} s (${code})`, { cause: e });
      case 'ENOTFOUND':
        return new FatalError(`${where}: cannot resolve ${this.host}; check the address (${code})`, { cause: e });
      default:
        return new TransientError(`${where}: connection to ${target} failed: ${e.message} (${code})`, { cause: e });
    }
  }

  close(): void {
    this.#agent.destroy();
  }
}
