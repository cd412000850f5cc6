/**
 * Every backend's test server at once, with a registry whose cloud backends are the real clients
 * pointed at them (the addresses stay the real ones): what the end-to-end tests sync through.
 */
import { defaultRegistry } from '../../src/shared/storage/all.js';
import { openCosStore } from '../../src/shared/storage/cos/index.js';
import { OssStore } from '../../src/shared/storage/oss/index.js';
import { openSftp } from '../../src/shared/storage/sftp/index.js';
import type { BackendRegistry } from '../../src/shared/storage/registry.js';
import { CosServer } from './cos-server.js';
import { OssServer } from './oss-server.js';
import { startS3Server, type S3TestServer } from './s3-server.js';
import { sshdMissing, startSshd, warnIfSshdMissing, writeClientFiles, type Sshd } from './sshd.js';
import { WebHdfsServer } from './webhdfs-server.js';

export const OSS_AK = 'LTAI5tTestKey';
export const OSS_SK = 'test-oss-secret';
export const COS_AK = 'AKIDtestKey';
export const COS_SK = 'test-cos-secret';
export const COS_BUCKET_SUFFIX = '-1250000000';
export const HDFS_HOME = '/user/ferry';

export interface Backends {
  s3: S3TestServer;
  oss: OssServer;
  cos: CosServer;
  hdfs: WebHdfsServer;
  /** Undefined where sshd is not installed (the SFTP cases are skipped, and say so). */
  sshd: Sshd | undefined;
  registry: BackendRegistry;
  /** Addresses of `bucket` (created on every object store) and of a directory, by backend. */
  s3Addr(bucket: string, path: string): string;
  ossAddr(bucket: string, path: string): string;
  cosAddr(bucket: string, path: string): string;
  hdfsAddr(path: string): string;
  sftpAddr(path: string): string;
  close(): Promise<void>;
}

export async function startBackends(bucket: string, hdfsGroups: Record<string, string[]> = { ferry: ['ferry'] }): Promise<Backends> {
  const s3 = await startS3Server();
  await s3.createBucket(bucket);
  const oss = await OssServer.start({ credentials: [{ accessKeyId: OSS_AK, accessKeySecret: OSS_SK }], buckets: [bucket] });
  const cos = await CosServer.start({ credentials: [{ secretId: COS_AK, secretKey: COS_SK }], buckets: [bucket + COS_BUCKET_SUFFIX] });
  const hdfs = await WebHdfsServer.start({ groups: hdfsGroups });
  hdfs.mkdir(HDFS_HOME, 'ferry', 0o755);
  const registry = defaultRegistry();
  registry.register({ scheme: 'oss', summary: 'oss (test server)', open: async (a, o) => new OssStore(a, o, { connectTo: oss.url }) });
  registry.register({ scheme: 'cos', summary: 'cos (test server)', open: async (a, o) => openCosStore(a, { ...o, noHttps: true }, { connectTo: cos.ip }) });
  let sshd: Sshd | undefined;
  if (!sshdMissing) {
    sshd = await startSshd();
    const client = await writeClientFiles(sshd, { knownHosts: [] });
    registry.register({ scheme: 'sftp', summary: 'sftp (test sshd)', open: async (a, o) => openSftp(a, { ...o, ssh: client.sshOptions }) });
  } else warnIfSshdMissing();
  return {
    s3,
    oss,
    cos,
    hdfs,
    sshd,
    registry,
    s3Addr: (b, p) => `s3://S3RVER:S3RVER@${s3.endpoint}/${b}/${p}`,
    ossAddr: (b, p) => `oss://${OSS_AK}:${OSS_SK}@${b}.oss-cn-hangzhou.aliyuncs.com/${p}`,
    cosAddr: (b, p) => `cos://${COS_AK}:${COS_SK}@${b}${COS_BUCKET_SUFFIX}.cos.${cos.region}.myqcloud.com/${p}`,
    hdfsAddr: (p) => `hdfs://ferry@127.0.0.1:${hdfs.namenodePort}${p}`,
    sftpAddr: (p) => `sftp://${sshd!.user}@127.0.0.1:${sshd!.port}${p}`,
    close: async () => {
      await Promise.allSettled([s3.close(), oss.close(), cos.close(), hdfs.stop(), sshd?.cleanup()]);
    },
  };
}
