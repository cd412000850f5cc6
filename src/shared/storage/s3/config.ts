import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { isIP } from 'node:net';
import type { S3ClientConfig } from '@aws-sdk/client-s3';
import type { Address } from '../address.js';
import { UsageError } from '../../errors.js';
import type { OpenOptions } from '../registry.js';

/** Where the credentials of a store come from; see `resolveCredentials` for the rule. */
export type CredentialSource =
  | { kind: 'address'; accessKeyId: string; secretAccessKey: string; sessionToken?: string }
  | { kind: 'env'; accessKeyId: string; secretAccessKey: string; sessionToken?: string }
  | { kind: 'anonymous' }
  | { kind: 'default' };

/** Everything an address and the run's options decide about talking to one bucket. */
export interface S3Settings {
  bucket: string;
  region: string;
  /** The service URL (`https://host[:port]`), or undefined for AWS's own endpoint of `region`. */
  endpoint?: string;
  forcePathStyle: boolean;
  https: boolean;
  credentials: CredentialSource;
  /** On AWS's default endpoint a bucket may live in any region: let the SDK follow the redirect. */
  followRegionRedirects: boolean;
  /** Identifies endpoint and account for server-side copy (never the secret). */
  scope: string;
}

const AWS_HOST = /^s3(?:[.-](?:dualstack\.)?([a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d+))?\.amazonaws\.com(\.cn)?(?::\d+)?$/;

/** The region an AWS S3 host name names (`s3.REGION.amazonaws.com`, `s3-REGION.amazonaws.com`). */
export function regionOfHost(host: string): string | undefined {
  const m = AWS_HOST.exec(host.toLowerCase());
  if (!m) return undefined;
  return m[1] ?? (m[2] ? 'cn-north-1' : 'us-east-1');
}

function hostOnly(endpoint: string): string {
  const m = /^(\[[^\]]+\]|[^:]*)/.exec(endpoint);
  return (m?.[1] ?? endpoint).replace(/^\[|\]$/g, '');
}

/** Endpoints given as an IP address or `localhost`: local or private services, spoken to in plain HTTP. */
export function isIpEndpoint(endpoint: string): boolean {
  const host = hostOnly(endpoint).toLowerCase();
  return host === 'localhost' || isIP(host) !== 0;
}

/**
 * The credential rule, first match wins:
 * 1. The address carries a non-empty access key (`s3://AK:SK[:TOKEN]@...`): those keys, with the
 *    address's token if it has one (never AWS_SESSION_TOKEN, which belongs to the environment's keys).
 * 2. The address carries an empty access key (`s3://:@bucket...` or `s3://@bucket...`): anonymous,
 *    unsigned requests (public buckets). A secret or token next to an empty access key is refused.
 * 3. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in `options.env ?? process.env`, with
 *    AWS_SESSION_TOKEN when it is set.
 * 4. The SDK's default chain (shared config and credential files, SSO, web identity, container and
 *    instance metadata), which reads process.env itself.
 */
export function resolveCredentials(address: Address, env: NodeJS.ProcessEnv): CredentialSource {
  if (address.accessKey !== undefined) {
    if (address.accessKey === '') {
      if ((address.secretKey ?? '') !== '' || (address.token ?? '') !== '') {
        throw new UsageError(`an empty access key means anonymous access, but ${address.display} also gives a secret key or token`);
      }
      return { kind: 'anonymous' };
    }
    return {
      kind: 'address',
      accessKeyId: address.accessKey,
      secretAccessKey: address.secretKey ?? '',
      ...(address.token ? { sessionToken: address.token } : {}),
    };
  }
  const ak = env['AWS_ACCESS_KEY_ID'];
  const sk = env['AWS_SECRET_ACCESS_KEY'];
  if (ak && sk) {
    const token = env['AWS_SESSION_TOKEN'];
    return { kind: 'env', accessKeyId: ak, secretAccessKey: sk, ...(token ? { sessionToken: token } : {}) };
  }
  return { kind: 'default' };
}

export function resolveSettings(address: Address, options: OpenOptions = {}): S3Settings {
  const env = options.env ?? process.env;
  const envRegion = env['AWS_REGION'] || env['AWS_DEFAULT_REGION'] || undefined;
  const credentials = resolveCredentials(address, env);
  const endpoint = address.endpoint;
  const awsRegion = endpoint === '' ? undefined : regionOfHost(endpoint);
  const region = awsRegion ?? envRegion ?? 'us-east-1';
  const https = !options.noHttps && address.scheme !== 'minio' && !(endpoint !== '' && isIpEndpoint(endpoint));
  const proto = https ? 'https' : 'http';
  let url: string | undefined;
  if (endpoint !== '') url = `${proto}://${endpoint}`;
  else if (!https) url = `http://s3.${region}.amazonaws.com`;
  // Every AWS region of a partition is one copy scope: CopyObject reads across regions.
  let service = endpoint.toLowerCase();
  if (endpoint === '') service = 'amazonaws.com';
  else if (awsRegion !== undefined) service = awsRegion.startsWith('cn-') ? 'amazonaws.com.cn' : 'amazonaws.com';
  const who = credentials.kind === 'anonymous' ? '' : credentials.kind === 'default' ? '(default credentials)' : credentials.accessKeyId;
  return {
    bucket: address.bucket,
    region,
    ...(url === undefined ? {} : { endpoint: url }),
    forcePathStyle: address.pathStyle,
    https,
    credentials,
    followRegionRedirects: endpoint === '',
    scope: `s3:${service}:${who}`,
  };
}

const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };

/** Connecting may take this long; a socket may then sit idle this long (waiting or streaming). */
export const CONNECTION_TIMEOUT_MS = 10_000;
export const SOCKET_TIMEOUT_MS = 120_000;

/**
 * The keep-alive agent of a store, sized for the run's concurrency (each transfer may upload a few
 * parts at once). The SDK client and the store's own requests (lean.ts) share it.
 */
export function keepAliveAgent(settings: S3Settings, options: { concurrency?: number; partConcurrency: number }): HttpAgent {
  const maxSockets = Math.min(1024, Math.max(16, (options.concurrency ?? 16) * options.partConcurrency));
  const agent = { keepAlive: true, maxSockets, maxFreeSockets: maxSockets };
  return settings.https ? new HttpsAgent(agent) : new HttpAgent(agent);
}

/**
 * The client configuration for a store. Sockets are kept alive in `agent` (by default a new
 * `keepAliveAgent`); queueing beyond its size is expected, so the handler's "socket usage at
 * capacity" warning is silenced.
 */
export function clientConfig(settings: S3Settings, options: { concurrency?: number; partConcurrency: number; agent?: HttpAgent }): S3ClientConfig {
  const agent = options.agent ?? keepAliveAgent(settings, options);
  const config: S3ClientConfig = {
    region: settings.region,
    forcePathStyle: settings.forcePathStyle,
    followRegionRedirects: settings.followRegionRedirects,
    // ferry retries by error class above the backend: one attempt per call here.
    maxAttempts: 1,
    // Without a logger of its own the SDK warns on the console when a stream body fails (a part whose source changed).
    logger: quiet,
    // Default CRC32 checksums send stream bodies as aws-chunked, which many S3-compatible stores
    // store verbatim (PITFALLS.md); ferry verifies data itself.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      connectionTimeout: CONNECTION_TIMEOUT_MS,
      socketTimeout: SOCKET_TIMEOUT_MS,
      httpAgent: settings.https ? { keepAlive: true } : agent,
      httpsAgent: settings.https ? (agent as HttpsAgent) : { keepAlive: true },
      logger: quiet,
    },
  };
  if (settings.endpoint !== undefined) config.endpoint = settings.endpoint;
  const c = settings.credentials;
  if (c.kind === 'address' || c.kind === 'env') {
    config.credentials = { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, ...(c.sessionToken ? { sessionToken: c.sessionToken } : {}) };
  } else if (c.kind === 'anonymous') {
    // Public buckets: send requests unsigned. The identity is never used, but must resolve.
    config.credentials = { accessKeyId: '', secretAccessKey: '' };
    config.signer = { sign: async (request) => request };
  }
  return config;
}
