import * as cosEnv from './cos/env.js';
import { fileBackend } from './file/index.js';
import * as hdfsEnv from './hdfs/env.js';
import { memBackend, type MemSpace } from './mem.js';
import * as ossEnv from './oss/env.js';
import { BackendRegistry, type Backend } from './registry.js';
import * as s3Env from './s3/env.js';
import * as sftpEnv from './sftp/env.js';

/**
 * A backend whose module (and SDK) loads on first use: a local sync does not pay for parsing the
 * cloud SDKs at start-up. Its credential variables come from its env.ts, which loads nothing.
 */
function lazy(
  scheme: string,
  summary: string,
  load: () => Promise<Backend>,
  env: { credentialEnv: readonly string[]; secretEnv: readonly string[] },
  aliases?: string[],
): Backend {
  return {
    scheme,
    summary,
    ...(aliases ? { aliases } : {}),
    credentialEnv: env.credentialEnv,
    secretEnv: env.secretEnv,
    async open(address, options) {
      return (await load()).open(address, options);
    },
  };
}

/**
 * Every backend ferry ships, registered. A backend module exports its `Backend`; adding one is a
 * line here.
 */
export function defaultRegistry(options: { mem?: MemSpace } = {}): BackendRegistry {
  const r = new BackendRegistry();
  r.register(fileBackend());
  r.register(memBackend(options.mem));
  r.register(lazy('s3', 's3://[AK:SK[:TOKEN]@]BUCKET[.ENDPOINT][/PREFIX] — Amazon S3 and S3-compatible stores; minio://ENDPOINT/BUCKET (path style)', async () => (await import('./s3/index.js')).s3Backend, s3Env, ['minio']));
  r.register(lazy('oss', 'oss://[AK:SK[:TOKEN]@]BUCKET.ENDPOINT[/PREFIX] — Aliyun OSS', async () => (await import('./oss/index.js')).ossBackend, ossEnv));
  r.register(lazy('sftp', '[user@]host:/path, sftp://user@host[:port]/path — SFTP over SSH (keys, agent, ~/.ssh/config)', async () => (await import('./sftp/index.js')).sftpBackend, sftpEnv));
  r.register(lazy('hdfs', 'hdfs://[user@]namenode[:port]/path — HDFS over WebHDFS (port 9870 by default)', async () => (await import('./hdfs/index.js')).hdfsBackend, hdfsEnv));
  r.register(lazy('cos', 'cos://[AK:SK[:TOKEN]@]BUCKET-APPID.cos.REGION.myqcloud.com[/PREFIX] — Tencent COS', async () => (await import('./cos/index.js')).cosBackend, cosEnv));
  return r;
}
