import type { Address } from '../address.js';
import { UsageError } from '../../errors.js';

/** Where an `oss://` address points, as ali-oss needs it. */
export interface OssEndpoint {
  /** The endpoint host as addressed, lower case, with its port if any ('oss-cn-hangzhou.aliyuncs.com'). */
  host: string;
  /** scheme://host[:port] */
  url: string;
  /** ali-oss's region name, 'oss-' prefix included ('oss-cn-hangzhou'); 'oss-cn-hangzhou' when the host does not say. */
  region: string;
  secure: boolean;
  /** The classic-network internal endpoint ('oss-cn-hangzhou-internal.aliyuncs.com'). */
  internal: boolean;
}

export interface OssCredentials {
  accessKeyId: string;
  accessKeySecret: string;
  securityToken?: string;
  /** Where they came from, for messages: 'address', 'ALIBABA_CLOUD_*' or 'OSS_*'. */
  source: string;
}

const DEFAULT_REGION = 'oss-cn-hangzhou';

/**
 * The endpoint of `oss://[AK:SK[:TOKEN]@]BUCKET.ENDPOINT[/PREFIX]`. HTTPS unless `noHttps`, or the
 * endpoint is an internal one (juicefs's rule: hosts containing '.vpc100-oss' or
 * 'internal.aliyuncs.com' speak plain HTTP inside Aliyun's network).
 */
export function resolveEndpoint(address: Pick<Address, 'bucket' | 'endpoint' | 'display'>, options: { noHttps?: boolean } = {}): OssEndpoint {
  const host = address.endpoint.toLowerCase();
  if (host === '') {
    throw new UsageError(`${address.display}: the address needs the endpoint of the bucket's region, as in oss://${address.bucket}.oss-cn-hangzhou.aliyuncs.com/PREFIX`);
  }
  if (!/^[a-z0-9.-]+(:\d+)?$/.test(host)) throw new UsageError(`${address.display}: ${JSON.stringify(address.endpoint)} is not an OSS endpoint host name`);
  const name = host.replace(/:\d+$/, '');
  const plainHttp = `.${name}`.includes('.vpc100-oss') || name.includes('internal.aliyuncs.com');
  const secure = !options.noHttps && !plainHttp;
  let region = DEFAULT_REGION;
  let internal = false;
  if (name.endsWith('.aliyuncs.com')) {
    const label = name.split('.')[0]!;
    internal = label.endsWith('-internal');
    region = internal ? label.slice(0, -'-internal'.length) : label;
  }
  return { host, url: `${secure ? 'https' : 'http'}://${host}`, region, secure, internal };
}

/**
 * Credentials from the address, else ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET / ALIBABA_CLOUD_SECURITY_TOKEN,
 * else OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET / OSS_SESSION_TOKEN.
 */
export function resolveCredentials(address: Pick<Address, 'accessKey' | 'secretKey' | 'token' | 'display'>, env: NodeJS.ProcessEnv): OssCredentials {
  if (address.accessKey !== undefined) {
    if (!address.accessKey || !address.secretKey) throw new UsageError(`${address.display}: the address has an access key but no secret key (oss://AK:SK@BUCKET.ENDPOINT)`);
    return withToken({ accessKeyId: address.accessKey, accessKeySecret: address.secretKey, source: 'address' }, address.token);
  }
  const pairs = [
    ['ALIBABA_CLOUD_ACCESS_KEY_ID', 'ALIBABA_CLOUD_ACCESS_KEY_SECRET', 'ALIBABA_CLOUD_SECURITY_TOKEN', 'ALIBABA_CLOUD_*'],
    ['OSS_ACCESS_KEY_ID', 'OSS_ACCESS_KEY_SECRET', 'OSS_SESSION_TOKEN', 'OSS_*'],
  ] as const;
  for (const [id, secret, token, source] of pairs) {
    const ak = env[id];
    const sk = env[secret];
    if (ak && sk) return withToken({ accessKeyId: ak, accessKeySecret: sk, source }, env[token]);
  }
  throw new UsageError(
    `${address.display}: no credentials: write them in the address (oss://AK:SK@BUCKET.ENDPOINT) or set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET (or OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET)`,
  );
}

function withToken(c: OssCredentials, token: string | undefined): OssCredentials {
  return token ? { ...c, securityToken: token } : c;
}
