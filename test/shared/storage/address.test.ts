import { homedir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { parseAddress, redactAddress } from '../../../src/shared/storage/address.js';

const cwd = '/work/here';
const p = (s: string) => parseAddress(s, { cwd });

describe('parseAddress: the examples of the juicefs sync document', () => {
  it('s3 virtual-hosted with credentials', () => {
    expect(p('s3://ABCDEFG:HIJKLMN@myjfs.s3.us-west-1.amazonaws.com')).toMatchObject({
      scheme: 's3',
      accessKey: 'ABCDEFG',
      secretKey: 'HIJKLMN',
      bucket: 'myjfs',
      endpoint: 's3.us-west-1.amazonaws.com',
      pathStyle: false,
      prefix: '',
      display: 's3://ABCDEFG:****@myjfs.s3.us-west-1.amazonaws.com',
    });
  });
  it('s3 with a directory prefix', () => {
    expect(p('s3://ABCDEFG:HIJKLMN@aaa.s3.us-west-1.amazonaws.com/movies/')).toMatchObject({ bucket: 'aaa', prefix: 'movies/' });
    expect(p('s3://ABCDEFG:HIJKLMN@aaa.s3.us-west-1.amazonaws.com/images/')).toMatchObject({ bucket: 'aaa', prefix: 'images/' });
  });
  it('oss and cos', () => {
    expect(p('oss://ABCDEFG:HIJKLMN@bbb.oss-cn-hangzhou.aliyuncs.com')).toMatchObject({ scheme: 'oss', bucket: 'bbb', endpoint: 'oss-cn-hangzhou.aliyuncs.com', prefix: '' });
    expect(p('cos://ABCDEFG:HIJKLMN@ccc-125000.cos.ap-beijing.myqcloud.com')).toMatchObject({ scheme: 'cos', bucket: 'ccc-125000', endpoint: 'cos.ap-beijing.myqcloud.com' });
  });
  it('local directories and prefixes', () => {
    expect(p('/mnt/jfs/movies/')).toMatchObject({ scheme: 'file', bucket: '/mnt/jfs/movies/', prefix: '' });
    expect(p('/mnt/jfs/')).toMatchObject({ scheme: 'file', bucket: '/mnt/jfs/', prefix: '' });
    // `./te` is a key prefix: it matches test and text, renamed with the destination's prefix.
    expect(p('./te')).toMatchObject({ scheme: 'file', bucket: '/work/here/', prefix: 'te' });
    expect(p('~/mnt/ab')).toMatchObject({ scheme: 'file', bucket: homedir() + '/mnt/', prefix: 'ab' });
    expect(p('~/mnt/')).toMatchObject({ bucket: homedir() + '/mnt/', prefix: '' });
    expect(p('.')).toMatchObject({ bucket: '/work/here/', prefix: '' });
    expect(p('file:///data/x/')).toMatchObject({ scheme: 'file', bucket: '/data/x/', prefix: '' });
  });
  it('minio is path style', () => {
    expect(p('minio://AK:SK@127.0.0.1:9000/bucket/some/prefix')).toMatchObject({
      scheme: 'minio',
      endpoint: '127.0.0.1:9000',
      bucket: 'bucket',
      prefix: 'some/prefix',
      pathStyle: true,
    });
    expect(p('minio://minio.example.com/b')).toMatchObject({ endpoint: 'minio.example.com', bucket: 'b', prefix: '' });
  });
});

describe('parseAddress: more forms', () => {
  it('s3 path style on IPs, localhost and the regional AWS endpoint', () => {
    expect(p('s3://127.0.0.1:9000/bkt/p/')).toMatchObject({ pathStyle: true, endpoint: '127.0.0.1:9000', bucket: 'bkt', prefix: 'p/' });
    expect(p('s3://localhost:4568/bkt')).toMatchObject({ pathStyle: true, bucket: 'bkt', prefix: '' });
    expect(p('s3://s3.us-east-2.amazonaws.com/bkt/x')).toMatchObject({ pathStyle: true, bucket: 'bkt', prefix: 'x' });
    expect(p('s3://bkt/x/y')).toMatchObject({ pathStyle: false, bucket: 'bkt', endpoint: '', prefix: 'x/y' });
    expect(() => p('s3://127.0.0.1:9000/')).toThrow(expect.objectContaining({ code: 'FERRY_USAGE' }));
  });
  it('session tokens and percent-escaped secrets', () => {
    const a = p('s3://AK:S%2FK%40x:TOK%3Den@bkt.s3.amazonaws.com/p');
    expect(a).toMatchObject({ accessKey: 'AK', secretKey: 'S/K@x', token: 'TOK=en', bucket: 'bkt' });
    expect(a.display).not.toContain('S%2FK');
    expect(a.display).not.toContain('TOK');
    expect(() => p('s3://AK:bad%zz@b')).toThrow(expect.objectContaining({ code: 'FERRY_USAGE' }));
  });
  it('percent-escapes in object prefixes, not in local paths', () => {
    expect(p('s3://bkt/a%20b/%23c')).toMatchObject({ prefix: 'a b/#c' });
    expect(p('/tmp/100%25/')).toMatchObject({ bucket: '/tmp/100%25/' });
  });
  it('sftp in both forms', () => {
    expect(p('alice@host.example:/data/dir/')).toMatchObject({ scheme: 'sftp', user: 'alice', host: 'host.example', bucket: '/data/dir/', prefix: '' });
    expect(p('host:/data/pre')).toMatchObject({ scheme: 'sftp', host: 'host', bucket: '/data/', prefix: 'pre' });
    expect(p('sftp://bob:pw@10.0.0.5:2222/srv/x/')).toMatchObject({ scheme: 'sftp', user: 'bob', password: 'pw', host: '10.0.0.5', port: 2222, bucket: '/srv/x/' });
    expect(p('sftp://bob:pw@10.0.0.5:2222/srv/x/').display).toBe('sftp://bob:****@10.0.0.5:2222/srv/x/');
  });
  it('sftp without a path is the login\'s home, as scp has it; an explicit / is the root', () => {
    // Bug: sftp://user@host parsed to the filesystem root '/', where --delete-dst would empty the server.
    expect(p('sftp://alice@host.example')).toMatchObject({ scheme: 'sftp', user: 'alice', host: 'host.example', bucket: '', prefix: '' });
    expect(p('sftp://alice@host.example:2222')).toMatchObject({ bucket: '', prefix: '', port: 2222 });
    expect(p('alice@host.example:')).toMatchObject({ scheme: 'sftp', bucket: '', prefix: '' });
    expect(p('host.example:notes/today')).toMatchObject({ scheme: 'sftp', bucket: 'notes/', prefix: 'today' });
    expect(p('sftp://alice@host.example/')).toMatchObject({ bucket: '/', prefix: '' });
    expect(p('alice@host.example:/')).toMatchObject({ bucket: '/', prefix: '' });
  });
  it('hdfs without a path is the user\'s home (resolved by the backend); an explicit / is the root', () => {
    // Bug: hdfs://namenode:port parsed to '/', the whole cluster.
    expect(p('hdfs://hadoop@namenode:9870')).toMatchObject({ scheme: 'hdfs', host: 'namenode', port: 9870, bucket: '', prefix: '' });
    expect(p('hdfs://namenode')).toMatchObject({ bucket: '', prefix: '' });
    expect(p('hdfs://namenode:9870/')).toMatchObject({ bucket: '/', prefix: '' });
  });
  it('hdfs', () => {
    expect(p('hdfs://hadoop@namenode:9870/user/data/')).toMatchObject({ scheme: 'hdfs', user: 'hadoop', host: 'namenode', port: 9870, bucket: '/user/data/', prefix: '' });
  });
  it('redacts secrets wherever they are', () => {
    expect(redactAddress('oss://AK:SECRET@b.oss-cn-hangzhou.aliyuncs.com/x')).toBe('oss://AK:****@b.oss-cn-hangzhou.aliyuncs.com/x');
    expect(redactAddress('u:pw@host:/p')).toBe('u:****@host:/p');
    expect(redactAddress('/plain/path')).toBe('/plain/path');
  });
  it('rejects bad ports and empty addresses', () => {
    expect(() => p('sftp://u@h:99999/x')).toThrow(expect.objectContaining({ code: 'FERRY_USAGE' }));
    expect(() => p('')).toThrow(expect.objectContaining({ code: 'FERRY_USAGE' }));
  });
});

describe('the registry', () => {
  it('knows every scheme of the address syntax it ships, and says which are not supported yet', async () => {
    const { defaultRegistry } = await import('../../../src/shared/storage/all.js');
    const r = defaultRegistry();
    expect(r.schemes()).toEqual(['cos', 'file', 'hdfs', 'mem', 'minio', 'oss', 's3', 'sftp']);
    await expect(r.open('gs://bucket/x')).rejects.toMatchObject({ code: 'FERRY_NOT_SUPPORTED_YET', message: expect.stringContaining('gs://') });
    await expect(r.open('gopher://bucket/x')).rejects.toMatchObject({ code: 'FERRY_UNSUPPORTED_SCHEME', message: expect.stringContaining('s3://') });
  });
});
