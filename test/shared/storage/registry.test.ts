import { describe, expect, it } from 'vitest';
import { Redactor } from '../../../src/shared/redact.js';
import { defaultRegistry } from '../../../src/shared/storage/all.js';
import { cosBackend } from '../../../src/shared/storage/cos/index.js';
import { hdfsBackend } from '../../../src/shared/storage/hdfs/index.js';
import { ossBackend } from '../../../src/shared/storage/oss/index.js';
import { BackendRegistry } from '../../../src/shared/storage/registry.js';
import { s3Backend } from '../../../src/shared/storage/s3/index.js';
import { sftpBackend } from '../../../src/shared/storage/sftp/index.js';

describe('credential environment variables', () => {
  it('each backend declares the variables it reads credentials from, its secrets among them', () => {
    const r = defaultRegistry();
    const declared = {
      s3: ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN'],
      oss: ['ALIBABA_CLOUD_ACCESS_KEY_ID', 'ALIBABA_CLOUD_ACCESS_KEY_SECRET', 'ALIBABA_CLOUD_SECURITY_TOKEN', 'OSS_ACCESS_KEY_ID', 'OSS_ACCESS_KEY_SECRET', 'OSS_SESSION_TOKEN'],
      cos: ['COS_SECRETID', 'COS_SECRETKEY', 'TENCENTCLOUD_SECRETID', 'TENCENTCLOUD_SECRETKEY', 'TENCENTCLOUD_SESSIONTOKEN'],
      sftp: ['SSH_AUTH_SOCK'],
      hdfs: ['HADOOP_USER_NAME'],
    };
    for (const [scheme, names] of Object.entries(declared)) {
      const b = r.get(scheme)!;
      expect(b.credentialEnv, scheme).toEqual(expect.arrayContaining(names));
      for (const secret of b.secretEnv ?? []) expect(b.credentialEnv, `${scheme}: ${secret}`).toContain(secret);
    }
    // The lazily loaded registrations say what the backend modules themselves say.
    for (const b of [s3Backend, ossBackend, cosBackend, sftpBackend, hdfsBackend]) {
      expect(r.get(b.scheme)!.credentialEnv).toEqual(b.credentialEnv);
      expect(r.get(b.scheme)!.secretEnv).toEqual(b.secretEnv);
    }
    expect(r.get('minio')!.credentialEnv).toContain('AWS_SECRET_ACCESS_KEY');
    expect(r.secretEnv()).not.toContain('AWS_ACCESS_KEY_ID');
    expect(r.credentialEnv()).toEqual(expect.arrayContaining([...declared.s3, ...declared.cos, 'HADOOP_USER_NAME']));
  });

  it("redacts the values of every registered backend's secret variables, and the conventional ones no backend reads", () => {
    const names = [
      'AWS_SECRET_ACCESS_KEY',
      'AWS_SESSION_TOKEN',
      'ALIBABA_CLOUD_ACCESS_KEY_SECRET',
      'ALIBABA_CLOUD_SECURITY_TOKEN',
      'OSS_ACCESS_KEY_SECRET',
      'OSS_SESSION_TOKEN',
      'COS_SECRETKEY',
      'COS_SECRET_KEY',
      'TENCENTCLOUD_SECRETKEY',
      'TENCENTCLOUD_SESSIONTOKEN',
      'MINIO_SECRET_KEY',
      'MINIO_ROOT_PASSWORD',
    ];
    const env = Object.fromEntries(names.map((n) => [n, `value-of-${n}`]));
    const r = new Redactor({ ...env, AWS_ACCESS_KEY_ID: 'AKIAVISIBLE' });
    for (const n of names) expect(r.redact(`x value-of-${n} y`), n).toBe('x **** y');
    // Key ids are not secrets: they stay readable in messages.
    expect(r.redact('AKIAVISIBLE')).toBe('AKIAVISIBLE');

    const registry = new BackendRegistry();
    registry.register({ scheme: 'x', summary: 'x', credentialEnv: ['X_ID', 'X_SECRET'], secretEnv: ['X_SECRET'], open: () => Promise.reject(new Error('unused')) });
    const own = new Redactor({ X_ID: 'visible-id', X_SECRET: 'hidden-secret' }, registry.secretEnv());
    expect(own.redact('visible-id hidden-secret')).toBe('visible-id ****');
  });
});
