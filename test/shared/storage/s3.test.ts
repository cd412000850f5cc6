import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAddress } from '../../../src/shared/storage/address.js';
import { clientConfig, resolveSettings, S3Store, s3Backend, type S3Tuning } from '../../../src/shared/storage/s3/index.js';
import { LeanS3 } from '../../../src/shared/storage/s3/lean.js';
import type { ObjectStore } from '../../../src/shared/storage/types.js';
import { FaultProxy, type LoggedRequest } from '../../support/fault-proxy.js';
import { startS3Server, type S3TestServer } from '../../support/s3-server.js';
import { describeConformance, listAll, patternStream, readAll, sha256 } from './conformance.js';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

const MiB = 1024 * 1024;

let server: S3TestServer;
let proxy: FaultProxy;
const stores: ObjectStore[] = [];

async function shared(): Promise<{ server: S3TestServer; proxy: FaultProxy }> {
  if (!server) {
    server = await startS3Server();
    proxy = await FaultProxy.start({ port: server.port });
  }
  return { server, proxy };
}

/** A store on the test server, through the proxy, with credentials from the address only. */
async function open(bucket: string, options: { creds?: string; storageClass?: string; tuning?: Partial<S3Tuning>; leanRequests?: boolean } = {}): Promise<S3Store> {
  const { proxy } = await shared();
  const address = parseAddress(`minio://${options.creds ?? 'S3RVER:S3RVER'}@${proxy.endpoint}/${bucket}`);
  const settings = resolveSettings(address, { env: {} });
  const store = new S3Store(settings, {
    description: address.display,
    ...(options.storageClass ? { storageClass: options.storageClass } : {}),
    ...(options.tuning ? { tuning: options.tuning } : {}),
    ...(options.leanRequests === undefined ? {} : { leanRequests: options.leanRequests }),
  });
  stores.push(store);
  return store;
}

function requestsFor(key: string, method?: string): LoggedRequest[] {
  return proxy.requests.filter((r) => decodeURIComponent(r.path).endsWith('/' + key) && (method === undefined || r.method === method));
}

afterAll(async () => {
  for (const s of stores) await s.close?.();
  await proxy?.close();
  await server?.close();
});

describeConformance('s3', async () => {
  const { server, proxy } = await shared();
  await server.createBucket('conformance');
  const store = await s3Backend.open(parseAddress(`minio://S3RVER:S3RVER@${proxy.endpoint}/conformance`), { env: {} });
  return {
    store,
    // s3rver keeps each key as a file path: no empty segments, and names leave room for its suffixes.
    emptySegments: false,
    maxNameBytes: 230,
    maxKeyBytes: 1024,
    inject: (fault, count) => proxy.inject(fault, count),
    openWithBadCredentials: () => s3Backend.open(parseAddress(`minio://S3RVER:wrong-secret@${proxy.endpoint}/conformance`), { env: {} }),
    // Past the 32 MiB of one PutObject: seven 5 MiB parts.
    multipartBytes: 33 * MiB,
    failNextPart: () => proxy.respond({ status: 500, body: '<Error><Code>InternalError</Code><Message>injected</Message></Error>', match: (r) => r.method === 'PUT' && r.query.has('partNumber') }),
    pendingUploads: () => server.pendingUploads('conformance'),
  };
});

describe('s3 backend', () => {
  beforeAll(async () => {
    const { server } = await shared();
    for (const b of ['work', 'copy-a', 'copy-b', 'pages']) await server.createBucket(b);
  });

  it('sent the 100 MiB conformance object in 5 MiB parts with UploadPart', () => {
    const key = 'big/object.bin';
    const parts = requestsFor(key, 'PUT').filter((r) => r.query.has('partNumber'));
    expect(parts.map((r) => Number(r.query.get('partNumber')))).toEqual(expect.arrayContaining(Array.from({ length: 20 }, (_, i) => i + 1)));
    expect(parts).toHaveLength(20);
    expect(parts.every((r) => r.headers['content-length'] === String(5 * MiB))).toBe(true);
    expect(requestsFor(key, 'POST').filter((r) => r.query.has('uploads'))).toHaveLength(1);
    expect(requestsFor(key, 'POST').filter((r) => r.query.has('uploadId'))).toHaveLength(1);
    expect(requestsFor(key, 'PUT').filter((r) => !r.query.has('partNumber'))).toHaveLength(0);
  });

  describe('address forms', () => {
    /** Where the SDK would send a GetObject, without sending it. */
    async function requestUrl(address: string, env: NodeJS.ProcessEnv = {}, noHttps = false): Promise<string> {
      const settings = resolveSettings(parseAddress(address), { env, noHttps });
      const client = new S3Client(clientConfig(settings, { partConcurrency: 4 }));
      let url = '';
      client.middlewareStack.add(
        () => async (args) => {
          const r = args.request as { protocol: string; hostname: string; port?: number; path: string };
          url = `${r.protocol}//${r.hostname}${r.port ? ':' + r.port : ''}${r.path}`;
          throw new Error('captured');
        },
        { step: 'build', priority: 'low', name: 'capture' },
      );
      await expect(client.send(new GetObjectCommand({ Bucket: settings.bucket, Key: 'k' }))).rejects.toThrow('captured');
      client.destroy();
      return url;
    }

    it('virtual-hosted AWS addresses take the region from the host name', async () => {
      const s = resolveSettings(parseAddress('s3://AK:SK@mybucket.s3.eu-west-2.amazonaws.com/pre/'), { env: { AWS_REGION: 'us-west-1' } });
      expect(s).toMatchObject({ bucket: 'mybucket', region: 'eu-west-2', endpoint: 'https://s3.eu-west-2.amazonaws.com', forcePathStyle: false, https: true, followRegionRedirects: false });
      expect(s.credentials).toEqual({ kind: 'address', accessKeyId: 'AK', secretAccessKey: 'SK' });
      expect(await requestUrl('s3://AK:SK@mybucket.s3.eu-west-2.amazonaws.com/pre/')).toBe('https://mybucket.s3.eu-west-2.amazonaws.com/k');
      const dash = resolveSettings(parseAddress('s3://AK:SK:TOKEN@b.s3-ap-northeast-1.amazonaws.com'), { env: {} });
      expect(dash).toMatchObject({ region: 'ap-northeast-1', credentials: { kind: 'address', accessKeyId: 'AK', secretAccessKey: 'SK', sessionToken: 'TOKEN' } });
      expect(resolveSettings(parseAddress('s3://AK:SK@b.s3.cn-north-1.amazonaws.com.cn'), { env: {} }).region).toBe('cn-north-1');
    });

    it('plain s3://BUCKET uses AWS with the region of the environment and follows region redirects', async () => {
      const env = { AWS_DEFAULT_REGION: 'ap-south-1', AWS_ACCESS_KEY_ID: 'ENVAK', AWS_SECRET_ACCESS_KEY: 'ENVSK', AWS_SESSION_TOKEN: 'ENVTOKEN' };
      const s = resolveSettings(parseAddress('s3://mybucket/some/prefix'), { env });
      expect(s).toMatchObject({ bucket: 'mybucket', region: 'ap-south-1', forcePathStyle: false, https: true, followRegionRedirects: true, scope: 's3:amazonaws.com:ENVAK' });
      expect(s.endpoint).toBeUndefined();
      expect(s.credentials).toEqual({ kind: 'env', accessKeyId: 'ENVAK', secretAccessKey: 'ENVSK', sessionToken: 'ENVTOKEN' });
      expect(await requestUrl('s3://mybucket/some/prefix', env)).toBe('https://mybucket.s3.ap-south-1.amazonaws.com/k');
      expect(resolveSettings(parseAddress('s3://mybucket'), { env: { AWS_REGION: 'eu-central-1', AWS_DEFAULT_REGION: 'x' } }).region).toBe('eu-central-1');
      const bare = resolveSettings(parseAddress('s3://mybucket'), { env: {} });
      expect(bare).toMatchObject({ region: 'us-east-1', credentials: { kind: 'default' } });
      expect(await requestUrl('s3://AK:SK@mybucket', {}, true)).toBe('http://mybucket.s3.us-east-1.amazonaws.com/k');
    });

    it('S3-compatible endpoints: virtual-hosted over HTTPS, --no-https for HTTP', async () => {
      const s = resolveSettings(parseAddress('s3://AK:SK@photos.storage.example.com:8443/2024/'), { env: {} });
      expect(s).toMatchObject({ bucket: 'photos', endpoint: 'https://storage.example.com:8443', forcePathStyle: false, https: true, region: 'us-east-1', scope: 's3:storage.example.com:8443:AK' });
      expect(await requestUrl('s3://AK:SK@photos.storage.example.com:8443/2024/')).toBe('https://photos.storage.example.com:8443/k');
      expect(resolveSettings(parseAddress('s3://AK:SK@photos.storage.example.com'), { env: {}, noHttps: true })).toMatchObject({ endpoint: 'http://storage.example.com', https: false });
    });

    it('minio:// and IP or localhost endpoints go path style over plain HTTP', async () => {
      expect(resolveSettings(parseAddress('minio://AK:SK@minio.internal:9000/bucket/p'), { env: {} })).toMatchObject({ bucket: 'bucket', endpoint: 'http://minio.internal:9000', forcePathStyle: true, https: false });
      expect(await requestUrl('minio://AK:SK@minio.internal:9000/bucket/p')).toBe('http://minio.internal:9000/bucket/k');
      expect(resolveSettings(parseAddress('s3://AK:SK@10.1.2.3:9000/bucket'), { env: {} })).toMatchObject({ endpoint: 'http://10.1.2.3:9000', forcePathStyle: true, https: false });
      expect(await requestUrl('s3://AK:SK@localhost:9000/bucket')).toBe('http://localhost:9000/bucket/k');
      expect(resolveSettings(parseAddress('s3://AK:SK@[::1]:9000/bucket'), { env: {} })).toMatchObject({ endpoint: 'http://[::1]:9000', forcePathStyle: true });
      // A path-style AWS host keeps HTTPS and its region.
      expect(resolveSettings(parseAddress('s3://AK:SK@s3.us-west-2.amazonaws.com/bucket'), { env: {} })).toMatchObject({ endpoint: 'https://s3.us-west-2.amazonaws.com', region: 'us-west-2', forcePathStyle: true, https: true });
    });

    it('credentials: the address first, then the environment; an empty access key means anonymous', () => {
      const env = { AWS_ACCESS_KEY_ID: 'ENVAK', AWS_SECRET_ACCESS_KEY: 'ENVSK', AWS_SESSION_TOKEN: 'ENVTOKEN' };
      // The environment's token belongs to the environment's keys, not to keys in the address.
      expect(resolveSettings(parseAddress('s3://AK:SK@b'), { env }).credentials).toEqual({ kind: 'address', accessKeyId: 'AK', secretAccessKey: 'SK' });
      const anon = resolveSettings(parseAddress('s3://:@public-data.s3.us-east-1.amazonaws.com'), { env });
      expect(anon.credentials).toEqual({ kind: 'anonymous' });
      expect(anon.scope).toBe('s3:amazonaws.com:');
      expect(clientConfig(anon, { partConcurrency: 4 }).signer).toBeDefined();
      expect(() => resolveSettings(parseAddress('s3://:secret@b'), { env })).toThrow(expect.objectContaining({ code: 'FERRY_USAGE' }));
    });

    it('one copy scope per endpoint and access key, never the secret', () => {
      const scope = (a: string): string => resolveSettings(parseAddress(a), { env: {} }).scope;
      expect(scope('s3://AK:SK1@a.s3.eu-west-1.amazonaws.com')).toBe(scope('s3://AK:SK2@b'));
      expect(scope('s3://AK:SK@a.s3.eu-west-1.amazonaws.com')).not.toBe(scope('s3://AK2:SK@b'));
      expect(scope('minio://AK:SK@10.0.0.1:9000/a')).toBe(scope('minio://AK:SK@10.0.0.1:9000/b'));
      expect(scope('minio://AK:SK@10.0.0.1:9000/a')).not.toBe(scope('minio://AK:SK@10.0.0.2:9000/a'));
      expect(scope('s3://AK:TOPSECRET@a.example.com')).not.toContain('TOPSECRET');
    });

    it('sends the lean calls to the URL the SDK would use, and leaves S3 Express buckets to the SDK', async () => {
      const forms: [string, NodeJS.ProcessEnv, boolean][] = [
        ['s3://AK:SK@mybucket.s3.eu-west-2.amazonaws.com/pre/', {}, false],
        ['s3://mybucket/some/prefix', { AWS_DEFAULT_REGION: 'ap-south-1', AWS_ACCESS_KEY_ID: 'A', AWS_SECRET_ACCESS_KEY: 'S' }, false],
        ['s3://AK:SK@mybucket', {}, true],
        ['s3://AK:SK@Not_A_Dns_Name', {}, false],
        ['s3://AK:SK@b.s3.cn-north-1.amazonaws.com.cn', {}, false],
        ['s3://AK:SK@photos.storage.example.com:8443/2024/', {}, false],
        ['minio://AK:SK@minio.internal:9000/bucket/p', {}, false],
        ['s3://AK:SK@[::1]:9000/bucket', {}, false],
        ['s3://AK:SK@s3.us-west-2.amazonaws.com/bucket', {}, false],
        ['s3://:@public-data.s3.us-east-1.amazonaws.com', {}, false],
      ];
      const leanUrl = async (address: string, env: NodeJS.ProcessEnv, noHttps: boolean): Promise<string | undefined> => {
        const settings = resolveSettings(parseAddress(address), { env, noHttps });
        const client = new S3Client(clientConfig(settings, { partConcurrency: 4 }));
        try {
          return await new LeanS3(client, settings, new Agent()).url('k');
        } finally {
          client.destroy();
        }
      };
      for (const [address, env, noHttps] of forms) expect(await leanUrl(address, env, noHttps), address).toBe(await requestUrl(address, env, noHttps));
      expect(await leanUrl('s3://AK:SK@dir--usw2-az1--x-s3', {}, false)).toBeUndefined();
    });

    it('sizes the keep-alive pool by the run concurrency and turns SDK retries and default checksums off', () => {
      const c = clientConfig(resolveSettings(parseAddress('minio://AK:SK@10.0.0.1:9000/a'), { env: {} }), { concurrency: 32, partConcurrency: 4 });
      expect(c).toMatchObject({ maxAttempts: 1, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
      const handler = c.requestHandler as { httpAgent: { maxSockets: number; keepAlive: boolean } };
      expect(handler.httpAgent).toMatchObject({ maxSockets: 128, keepAlive: true });
    });
  });

  describe('errors', () => {
    it('names a missing bucket', async () => {
      const s = await open('no-such-bucket');
      await expect(listAll(s)).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND', message: expect.stringContaining('the bucket no-such-bucket does not exist') });
      const err = await s.get('a/b.txt').catch((e: Error) => e);
      expect(err).toMatchObject({ code: 'FERRY_NOT_FOUND', message: 's3 GET no-such-bucket/a/b.txt: the bucket no-such-bucket does not exist (404 NoSuchBucket)' });
    });

    it('names the endpoint of a refused connection', async () => {
      const port = await new Promise<number>((resolve) => {
        const srv = createServer().listen(0, '127.0.0.1', () => {
          const p = (srv.address() as { port: number }).port;
          srv.close(() => resolve(p));
        });
      });
      const s = await s3Backend.open(parseAddress(`minio://S3RVER:S3RVER@127.0.0.1:${port}/work`), { env: {} });
      try {
        const err = await s.head('x').catch((e: Error) => e);
        expect(err).toMatchObject({ code: 'FERRY_TRANSIENT' });
        expect((err as Error).message).toBe(`s3 HEAD work/x: connection refused by http://127.0.0.1:${port} (ECONNREFUSED)`);
      } finally {
        await s.close?.();
      }
    });

    it('says which key a refused signature was for, without the secret', async () => {
      const bad = await open('work', { creds: 'S3RVER:wrong-secret' });
      const err = await bad.get('some/key').catch((e: Error) => e);
      expect(err).toMatchObject({ code: 'FERRY_PERMISSION_DENIED', message: 's3 GET work/some/key: access denied (403 SignatureDoesNotMatch): check the secret key' });
      const unknown = await open('work', { creds: 'NOBODY:x' });
      await expect(unknown.put('k', Buffer.from('x'))).rejects.toMatchObject({ code: 'FERRY_PERMISSION_DENIED', message: expect.stringContaining('InvalidAccessKeyId') });
      expect(String((err as Error).message) + String((err as Error).stack)).not.toContain('wrong-secret');
    });

    it('classifies faults on every operation and names operation, bucket and key', async () => {
      const s = await open('work');
      await s.put('faults/y', Buffer.from('yy'));
      proxy.inject('throttle', 1);
      await expect(s.get('faults/y')).rejects.toMatchObject({ code: 'FERRY_THROTTLED', message: 's3 GET work/faults/y: the service asks to slow down (503 SlowDown)' });
      proxy.inject('error', 1);
      await expect(s.put('faults/y', Buffer.from('zz'))).rejects.toMatchObject({ code: 'FERRY_TRANSIENT', message: 's3 PUT work/faults/y: service error (500 InternalError)' });
      proxy.inject('drop', 1);
      await expect(s.put('faults/y', Readable.from([Buffer.from('zz')]), { size: 2 })).rejects.toMatchObject({ code: 'FERRY_TRANSIENT' });
      proxy.inject('drop', 1);
      await expect(s.delete('faults/y')).rejects.toMatchObject({ code: 'FERRY_TRANSIENT', message: expect.stringContaining('s3 DELETE work/faults/y') });
      expect((await readAll(await s.get('faults/y'))).toString()).toBe('yy');
    });

    // Guards against trusting a service's order blindly: an unordered page would make the sync's merge skip keys.
    it('refuses a listing out of order, and drops a common prefix repeated across pages', async () => {
      const s = await open('work');
      const xml = (items: string, truncated: boolean): string =>
        `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>work</Name><Prefix></Prefix><MaxKeys>1000</MaxKeys><IsTruncated>${truncated}</IsTruncated>${truncated ? '<NextContinuationToken>t2</NextContinuationToken>' : ''}${items}</ListBucketResult>`;
      const obj = (k: string): string => `<Contents><Key>${k}</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>"e"</ETag><Size>1</Size></Contents>`;
      const isList = (r: LoggedRequest): boolean => r.method === 'GET' && r.query.get('list-type') === '2';
      proxy.respond({ status: 200, body: xml(obj('b') + obj('a'), false), match: isList });
      await expect(listAll(s)).rejects.toMatchObject({ code: 'FERRY_LIST_ORDER', message: expect.stringContaining('"a" came after "b"') });
      proxy.respond({ status: 200, body: xml(obj('a') + '<CommonPrefixes><Prefix>d/</Prefix></CommonPrefixes>', true), match: isList });
      proxy.respond({ status: 200, body: xml('<CommonPrefixes><Prefix>d/</Prefix></CommonPrefixes>' + obj('e'), false), match: isList });
      expect((await listAll(s, { delimiter: '/' })).map((e) => [e.key, e.isDir])).toEqual([
        ['a', false],
        ['d/', true],
        ['e', false],
      ]);
      expect(proxy.requests.filter(isList).at(-1)!.query.get('continuation-token')).toBe('t2');
    });
  });

  describe('transfers', () => {
    it('creates conditionally with If-None-Match: * on PutObject and CompleteMultipartUpload, straight and through the SDK', async () => {
      // A claim marker must never overwrite another manager's: S3 refuses with 412, or with 409 while another conditional write of the key is under way.
      for (const leanRequests of [true, false]) {
        const s = await open('work', { leanRequests, tuning: { putThreshold: 5 * MiB, partSize: 5 * MiB } });
        const key = `cond-${leanRequests}/claim`;
        proxy.reset();
        await s.put(key, Buffer.from('mine'), { size: 4, ifAbsent: true });
        await expect(s.put(key, Buffer.from('theirs'), { size: 6, ifAbsent: true })).rejects.toMatchObject({ code: 'FERRY_ALREADY_EXISTS' });
        const size = 6 * MiB;
        await expect(s.put(key, patternStream(size, 3), { size, ifAbsent: true })).rejects.toMatchObject({ code: 'FERRY_ALREADY_EXISTS' });
        expect((await readAll(await s.get(key))).toString()).toBe('mine');
        expect(await server.pendingUploads('work')).toBe(0);
        const writes = proxy.requests.filter((r) => decodeURIComponent(r.path).endsWith('/' + key) && (r.method === 'PUT' ? !r.query.has('partNumber') : r.query.has('uploadId') && r.method === 'POST'));
        expect(writes.map((r) => [r.method, r.headers['if-none-match'], r.status])).toEqual([
          ['PUT', '*', 200],
          ['PUT', '*', 412],
          ['POST', '*', 412],
        ]);

        // A second create while the first one's body is still coming: 409 ConditionalRequestConflict.
        const racing = `cond-${leanRequests}/racing`;
        const held = new PassThrough();
        const first = s.put(racing, held, { size: 5, ifAbsent: true });
        held.write('fi');
        while (!proxy.requests.some((r) => r.method === 'PUT' && decodeURIComponent(r.path).endsWith('/' + racing))) await new Promise((r) => setTimeout(r, 10));
        await new Promise((r) => setTimeout(r, 50));
        await expect(s.put(racing, Buffer.from('second'), { size: 6, ifAbsent: true })).rejects.toMatchObject({ code: 'FERRY_ALREADY_EXISTS' });
        held.end('rst');
        await first;
        expect((await readAll(await s.get(racing))).toString()).toBe('first');
        expect(proxy.requests.filter((r) => decodeURIComponent(r.path).endsWith('/' + racing)).map((r) => r.status)).toEqual(expect.arrayContaining([409, 200]));
      }
    });

    it('pages listings through the service and merges directories with objects in order', async () => {
      const s = await open('pages', { tuning: { pageSize: 40 } });
      const keys = Array.from({ length: 160 }, (_, i) => `p/${String(i).padStart(3, '0')}`);
      keys.push('p/050/inside', 'p/150-x', 'p/150/y', 'p/dir/');
      const pending = [...keys];
      await Promise.all(Array.from({ length: 16 }, async () => {
        for (let k = pending.shift(); k !== undefined; k = pending.shift()) await s.put(k, Buffer.from(k.endsWith('/') ? '' : k));
      }));
      proxy.reset();
      let pages = 0;
      const seen: string[] = [];
      for await (const page of s.list({ prefix: 'p/' })) {
        pages++;
        expect(page.length).toBeLessThanOrEqual(40);
        seen.push(...page.map((e) => e.key));
      }
      expect(pages).toBeGreaterThanOrEqual(4);
      expect(seen).toEqual([...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
      const lists = proxy.requests.filter((r) => r.query.get('list-type') === '2');
      expect(lists.length).toBe(pages);
      expect(lists.slice(1).every((r) => r.query.has('continuation-token'))).toBe(true);
      const dirs = await listAll(s, { prefix: 'p/1', delimiter: '/' });
      expect(dirs.filter((e) => e.key.startsWith('p/150')).map((e) => [e.key, e.isDir])).toEqual([
        ['p/150', false],
        ['p/150-x', false],
        ['p/150/', true],
      ]);
      expect((await listAll(s, { prefix: 'p/d' })).map((e) => [e.key, e.isDir, e.size])).toEqual([['p/dir/', true, 0]]);
    });

    it('uploads streams of unknown size in parts, and small ones with one PutObject', async () => {
      const s = await open('work');
      const size = 12 * MiB + 123;
      proxy.reset();
      await s.put('unknown/big', patternStream(size, 3));
      expect(requestsFor('unknown/big', 'PUT').map((r) => Number(r.headers['content-length']))).toEqual([5 * MiB, 5 * MiB, 2 * MiB + 123]);
      expect(await sha256(await s.get('unknown/big'))).toEqual(await sha256(patternStream(size, 3)));
      await s.put('unknown/small', Readable.from([Buffer.from('tiny '), Buffer.from('stream')]));
      expect(requestsFor('unknown/small', 'POST')).toHaveLength(0);
      expect((await readAll(await s.get('unknown/small'))).toString()).toBe('tiny stream');
      await s.put('unknown/empty', Readable.from([]));
      expect((await s.head('unknown/empty')).size).toBe(0);
    });

    it('aborts a multipart upload whose part fails, leaving no object', async () => {
      const s = await open('work');
      proxy.reset();
      proxy.respond({ status: 500, body: '<Error><Code>InternalError</Code><Message>boom</Message></Error>', match: (r) => r.query.get('partNumber') === '2' });
      const size = 40 * MiB;
      await expect(s.put('abort/me', patternStream(size, 4), { size })).rejects.toMatchObject({ code: 'FERRY_TRANSIENT', message: expect.stringContaining('UploadPart #2 work/abort/me') });
      const aborts = requestsFor('abort/me', 'DELETE').filter((r) => r.query.has('uploadId'));
      expect(aborts.map((r) => r.status)).toEqual([204]);
      await expect(s.head('abort/me')).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
      // The stream was not read to the end: at most the parts in flight plus one were taken.
      expect(requestsFor('abort/me', 'PUT').length).toBeLessThanOrEqual(6);
    });

    it('fails, instead of hanging, when a stream is shorter or longer than announced', async () => {
      const s = await open('work');
      await expect(s.put('len/short', Readable.from([Buffer.from('0123456789')]), { size: 20 })).rejects.toMatchObject({ code: 'FERRY_SOURCE_CHANGED' });
      await expect(s.put('len/long', Readable.from([Buffer.from('0123456789')]), { size: 5 })).rejects.toMatchObject({ code: 'FERRY_SOURCE_CHANGED' });
      await expect(s.put('len/multi', patternStream(36 * MiB, 5), { size: 40 * MiB })).rejects.toMatchObject({ code: 'FERRY_SOURCE_CHANGED' });
      for (const k of ['len/short', 'len/long', 'len/multi']) await expect(s.head(k)).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
    });

    it('passes the storage class to PutObject, CreateMultipartUpload and CopyObject', async () => {
      const s = await open('work', { storageClass: 'STANDARD_IA', tuning: { putThreshold: 1 * MiB } });
      proxy.reset();
      await s.put('class/small', Buffer.from('x'));
      await s.put('class/override', Buffer.from('x'), { storageClass: 'REDUCED_REDUNDANCY' });
      await s.put('class/multi', patternStream(6 * MiB, 1), { size: 6 * MiB });
      await s.copyFrom('class/copied', s.copySource('class/small'), { size: 1 });
      expect(requestsFor('class/small', 'PUT')[0]!.headers['x-amz-storage-class']).toBe('STANDARD_IA');
      expect(requestsFor('class/override', 'PUT')[0]!.headers['x-amz-storage-class']).toBe('REDUCED_REDUNDANCY');
      expect(requestsFor('class/multi', 'POST').find((r) => r.query.has('uploads'))!.headers['x-amz-storage-class']).toBe('STANDARD_IA');
      expect(requestsFor('class/copied', 'PUT')[0]!.headers['x-amz-storage-class']).toBe('STANDARD_IA');
      // The server kept it: an unsigned HEAD (the test bucket is public-read) shows it.
      for (const [key, cls] of [['class/small', 'STANDARD_IA'], ['class/override', 'REDUCED_REDUNDANCY'], ['class/multi', 'STANDARD_IA']] as const) {
        const res = await fetch(`http://${server.endpoint}/work/${key}`, { method: 'HEAD' });
        expect(res.headers.get('x-amz-storage-class'), key).toBe(cls);
      }
      await expect(s.put('class/bad', Buffer.from('x'), { storageClass: 'NO_SUCH_CLASS' })).rejects.toMatchObject({ code: 'FERRY_FATAL', message: expect.stringContaining('400 InvalidStorageClass') });
    });

    it('copies server-side between two stores of the same scope, keys with awkward characters too', async () => {
      const a = await open('copy-a');
      const b = await open('copy-b');
      expect(a.features.copy!.scope).toBe(b.features.copy!.scope);
      const key = 'src/a #?+%&=é 日本.txt';
      await a.put(key, Buffer.from('server-side bytes'));
      proxy.reset();
      await b.copyFrom('dst/copied', a.copySource(key), { size: 17 });
      expect(proxy.requests.map((r) => r.method)).toEqual(['PUT']);
      expect(proxy.requests[0]!.headers['x-amz-copy-source']).toBeDefined();
      expect((await readAll(await b.get('dst/copied'))).toString()).toBe('server-side bytes');
      const other = await open('copy-b', { creds: 'OTHER:x' });
      await expect(other.copyFrom('dst/x', a.copySource(key), { size: 17 })).rejects.toMatchObject({ code: 'FERRY_FATAL' });
    });

    it('copies above the copy threshold with UploadPartCopy ranges', async () => {
      const a = await open('copy-a');
      const b = await open('copy-b', { tuning: { copyThreshold: 1 * MiB, copyPartSize: 5 * MiB } });
      const size = 11 * MiB + 7;
      await a.put('big/src', patternStream(size, 9), { size });
      proxy.reset();
      await b.copyFrom('big/dst', a.copySource('big/src'), { size });
      const parts = requestsFor('big/dst', 'PUT');
      expect(parts.map((r) => r.headers['x-amz-copy-source-range']).sort()).toEqual([`bytes=0-${5 * MiB - 1}`, `bytes=${10 * MiB}-${size - 1}`, `bytes=${5 * MiB}-${10 * MiB - 1}`]);
      expect(requestsFor('big/src', 'GET')).toHaveLength(0);
      expect(await sha256(await b.get('big/dst'))).toEqual(await sha256(patternStream(size, 9)));
    });

    it('deletes in batches of 1,000 with Content-MD5, and reports keys the service kept', async () => {
      const s = await open('work');
      for (const k of ['many/1', 'many/2', 'many/3']) await s.put(k, Buffer.from(k));
      proxy.reset();
      await s.deleteMany(['many/1', 'many/2', 'many/3', ...Array.from({ length: 1200 }, (_, i) => `many/missing-${i}`)]);
      const batches = proxy.requests.filter((r) => r.method === 'POST' && r.query.has('delete'));
      expect(batches).toHaveLength(2);
      expect(batches.every((r) => typeof r.headers['content-md5'] === 'string')).toBe(true);
      expect(await listAll(s, { prefix: 'many/' })).toEqual([]);

      proxy.respond({
        status: 200,
        body: '<?xml version="1.0" encoding="UTF-8"?><DeleteResult><Error><Key>locked/a</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error></DeleteResult>',
        match: (r) => r.query.has('delete'),
      });
      await expect(s.deleteMany(['locked/a', 'locked/b'])).rejects.toMatchObject({
        code: 'FERRY_PERMISSION_DENIED',
        message: 's3 DeleteObjects work: 1 of 2 keys were not deleted: locked/a (AccessDenied: Access Denied)',
      });
    });

    it('reads public buckets anonymously, unsigned, and cannot write to them', async () => {
      const s = await open('work');
      await s.put('public/file', Buffer.from('for everyone'));
      const anon = await open('work', { creds: ':' });
      proxy.reset();
      expect((await readAll(await anon.get('public/file'))).toString()).toBe('for everyone');
      expect(proxy.requests[0]!.headers['authorization']).toBeUndefined();
      await expect(anon.put('public/new', Buffer.from('x'))).rejects.toMatchObject({ code: 'FERRY_PERMISSION_DENIED' });
    });

    it('reads an empty range at the end of an object, and zero-length reads check the key exists', async () => {
      const s = await open('work');
      await s.put('ranges/ten', Buffer.from('0123456789'));
      expect((await readAll(await s.get('ranges/ten', { offset: 10 }))).length).toBe(0);
      expect((await readAll(await s.get('ranges/ten', { offset: 3, length: 0 }))).length).toBe(0);
      await expect(s.get('ranges/none', { length: 0 })).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
      const r = requestsFor('ranges/ten', 'GET');
      expect(r.at(-1)!.headers['range']).toBe('bytes=10-');
    });
  });
});

describe('s3 lean requests (GetObject, HeadObject, PutObject, DeleteObject without the SDK)', () => {
  const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
  /** The SDK sends an invocation id with every request; the lean path sends none. */
  const bySdk = (r: LoggedRequest): boolean => r.headers['amz-sdk-invocation-id'] !== undefined;
  const signedHeaders = (r: LoggedRequest): string[] => /SignedHeaders=([^,]+),/.exec(r.headers['authorization'] ?? '')?.[1]?.split(';') ?? [];
  const outcome = (p: Promise<unknown>): Promise<string | { code: string; message: string }> =>
    p.then(
      () => 'ok',
      (e: { code: string; message: string }) => ({ code: e.code, message: e.message }),
    );

  beforeAll(async () => {
    const { server } = await shared();
    await server.createBucket('lean');
  });

  it('sends the per-object calls and listings straight and signed', async () => {
    const s = await open('lean');
    proxy.reset();
    await s.put('d/buf', Buffer.from('buffer body'));
    await s.put('d/stream', Readable.from([Buffer.from('stream '), Buffer.from('body')]), { size: 11 });
    expect((await s.head('d/buf')).size).toBe(11);
    expect((await readAll(await s.get('d/stream'))).toString()).toBe('stream body');
    expect((await readAll(await s.get('d/buf', { offset: 7, length: 4 }))).toString()).toBe('body');
    await s.delete('d/buf');
    await expect(s.head('d/buf')).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND', message: 's3 HEAD lean/d/buf: not found (404 NotFound)' });
    await expect(s.get('d/buf')).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND', message: 's3 GET lean/d/buf: not found (404 NoSuchKey)' });
    expect((await listAll(s, { prefix: 'd/' })).map((e) => e.key)).toEqual(['d/stream']);

    const lean = proxy.requests.filter((r) => !bySdk(r));
    expect(lean.map((r) => `${r.method} ${r.path} ${r.status}`)).toEqual([
      'PUT /lean/d/buf 200',
      'PUT /lean/d/stream 200',
      'HEAD /lean/d/buf 200',
      'GET /lean/d/stream 200',
      'GET /lean/d/buf 206',
      'DELETE /lean/d/buf 204',
      'HEAD /lean/d/buf 404',
      'GET /lean/d/buf 404',
      'GET /lean/ 200',
    ]);
    const listing = lean.pop()!;
    expect(Object.fromEntries(listing.query)).toEqual({ 'list-type': '2', 'max-keys': '1000', prefix: 'd/' });
    expect(listing.headers['authorization']).toMatch(/^AWS4-HMAC-SHA256 Credential=S3RVER\//);
    for (const r of lean) {
      // s3rver (test/support/s3-server.ts) checked each signature: the statuses above are its answers.
      expect(r.headers['authorization']).toMatch(/^AWS4-HMAC-SHA256 Credential=S3RVER\/\d{8}\/us-east-1\/s3\/aws4_request, SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}$/);
      expect(signedHeaders(r)).toEqual(expect.arrayContaining(['host', 'x-amz-content-sha256', 'x-amz-date']));
      expect(r.headers['x-amz-content-sha256']).toBe(r.method === 'PUT' ? 'UNSIGNED-PAYLOAD' : EMPTY_SHA256);
      expect(r.headers['x-amz-security-token']).toBeUndefined();
      expect([...r.query.keys()]).toEqual([]);
    }
    expect(lean.filter((r) => r.method === 'PUT').map((r) => [r.headers['content-length'], r.headers['content-type']])).toEqual([
      ['11', 'application/octet-stream'],
      ['11', 'application/octet-stream'],
    ]);
    expect(lean[4]!.headers['range']).toBe('bytes=7-10');
    expect(signedHeaders(lean[4]!)).toContain('range');
    expect(proxy.requests.filter(bySdk)).toEqual([]);
  });

  it('is refused with a wrong secret on every call, with the errors of the SDK path', async () => {
    const good = await open('lean');
    await good.put('sig/k', Buffer.from('kept'));
    const attempts = async (s: S3Store): Promise<unknown[]> => [
      await outcome(s.get('sig/k')),
      await outcome(s.get('sig/k', { offset: 1, length: 2 })),
      await outcome(s.head('sig/k')),
      await outcome(s.put('sig/k', Buffer.from('overwritten'))),
      await outcome(s.put('sig/k', Readable.from([Buffer.from('overwritten')]), { size: 11 })),
      await outcome(s.delete('sig/k')),
    ];
    proxy.reset();
    const lean = await attempts(await open('lean', { creds: 'S3RVER:wrong-secret' }));
    expect(proxy.requests.filter(bySdk)).toEqual([]);
    expect(proxy.requests.map((r) => r.status)).toEqual([403, 403, 403, 403, 403, 403]);
    const sdk = await attempts(await open('lean', { creds: 'S3RVER:wrong-secret', leanRequests: false }));
    expect(lean).toEqual(sdk);
    expect(lean).toEqual([
      { code: 'FERRY_PERMISSION_DENIED', message: 's3 GET lean/sig/k: access denied (403 SignatureDoesNotMatch): check the secret key' },
      { code: 'FERRY_PERMISSION_DENIED', message: 's3 GET lean/sig/k: access denied (403 SignatureDoesNotMatch): check the secret key' },
      { code: 'FERRY_PERMISSION_DENIED', message: 's3 HEAD lean/sig/k: access denied (403 Unknown)' },
      { code: 'FERRY_PERMISSION_DENIED', message: 's3 PUT lean/sig/k: access denied (403 SignatureDoesNotMatch): check the secret key' },
      { code: 'FERRY_PERMISSION_DENIED', message: 's3 PUT lean/sig/k: access denied (403 SignatureDoesNotMatch): check the secret key' },
      { code: 'FERRY_PERMISSION_DENIED', message: 's3 DELETE lean/sig/k: access denied (403 SignatureDoesNotMatch): check the secret key' },
    ]);
    expect((await readAll(await good.get('sig/k'))).toString()).toBe('kept');
  });

  it('sends session tokens: from the address, and from the SDK credential chain (a profile)', async () => {
    const run = async (s: ObjectStore, key: string): Promise<void> => {
      await s.put(key, Buffer.from('t'));
      expect((await s.head(key)).size).toBe(1);
      expect((await readAll(await s.get(key))).toString()).toBe('t');
      await s.delete(key);
    };
    const withToken = await open('lean', { creds: 'S3RVER:S3RVER:ADDRESS-TOKEN' });
    proxy.reset();
    await run(withToken, 'tok/a');
    expect(proxy.requests.map((r) => r.headers['x-amz-security-token'])).toEqual(Array(4).fill('ADDRESS-TOKEN'));
    expect(proxy.requests.every((r) => signedHeaders(r).includes('x-amz-security-token') && !bySdk(r))).toBe(true);

    // No keys in the address or the store's environment: the SDK's default chain finds a profile.
    const dir = await mkdtemp(join(tmpdir(), 'ferry-aws-'));
    const names = ['AWS_SHARED_CREDENTIALS_FILE', 'AWS_CONFIG_FILE', 'AWS_PROFILE', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_EC2_METADATA_DISABLED'];
    const saved = Object.fromEntries(names.map((n) => [n, process.env[n]]));
    try {
      await writeFile(join(dir, 'credentials'), '[ferry-test]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER\naws_session_token = PROFILE-TOKEN\n');
      for (const n of names) delete process.env[n];
      Object.assign(process.env, { AWS_SHARED_CREDENTIALS_FILE: join(dir, 'credentials'), AWS_CONFIG_FILE: join(dir, 'config'), AWS_PROFILE: 'ferry-test', AWS_EC2_METADATA_DISABLED: 'true' });
      const fromProfile = await s3Backend.open(parseAddress(`minio://${proxy.endpoint}/lean`), { env: {} });
      stores.push(fromProfile);
      expect((fromProfile as S3Store).settings.credentials).toEqual({ kind: 'default' });
      proxy.reset();
      await run(fromProfile, 'tok/p');
      expect(proxy.requests.map((r) => r.headers['x-amz-security-token'])).toEqual(Array(4).fill('PROFILE-TOKEN'));
    } finally {
      for (const n of names) {
        if (saved[n] === undefined) delete process.env[n];
        else process.env[n] = saved[n];
      }
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('sends anonymous requests unsigned', async () => {
    const s = await open('lean');
    await s.put('anon/f', Buffer.from('public'));
    const anon = await open('lean', { creds: ':' });
    proxy.reset();
    expect((await anon.head('anon/f')).size).toBe(6);
    expect((await readAll(await anon.get('anon/f', { offset: 1 }))).toString()).toBe('ublic');
    await expect(anon.delete('anon/f')).rejects.toMatchObject({ code: 'FERRY_PERMISSION_DENIED', message: 's3 DELETE lean/anon/f: access denied (403 AccessDenied)' });
    expect(proxy.requests.map((r) => [r.method, r.headers['authorization'], r.headers['x-amz-date'], bySdk(r)])).toEqual([
      ['HEAD', undefined, undefined, false],
      ['GET', undefined, undefined, false],
      ['DELETE', undefined, undefined, false],
    ]);
  });

  it('round-trips awkward keys, addressed exactly as the SDK addresses them', async () => {
    const lean = await open('lean');
    const sdk = await open('lean', { leanRequests: false });
    const names = ['with space', '100%', '%41', 'a+b', 'hash#tag', 'what?', 'amp&eq=', "mark!'()*~", 'semi;colon', '日本語', 'emoji😀', 'caf\u00e9', 'cafe\u0301', 'dir/'];
    const keys = names.map((n) => `awk/${n}`);
    for (const key of keys) {
      const data = Buffer.from(key.endsWith('/') ? '' : `value of ${key}`);
      proxy.reset();
      await lean.put(key, data);
      expect((await readAll(await sdk.get(key))).equals(data), key).toBe(true);
      await sdk.put(key, Readable.from([data]), { size: data.length });
      expect((await lean.head(key)).size, key).toBe(key.endsWith('/') ? 0 : data.length);
      expect((await readAll(await lean.get(key))).equals(data), key).toBe(true);
      if (data.length > 2) expect((await readAll(await lean.get(key, { offset: 1, length: 2 }))).equals(data.subarray(1, 3)), key).toBe(true);
      await lean.delete(key);
      await expect(sdk.head(key)).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
      // One path per key, whichever path sent the request.
      expect(new Set(proxy.requests.map((r) => r.path)).size, key).toBe(1);
      expect(proxy.requests.filter((r) => !bySdk(r)).length, key).toBeGreaterThanOrEqual(4);
    }
    // NFC and NFD stay two keys.
    await lean.put('awk/caf\u00e9', Buffer.from('nfc'));
    await lean.put('awk/cafe\u0301', Buffer.from('nfd'));
    expect((await readAll(await lean.get('awk/caf\u00e9'))).toString()).toBe('nfc');
    expect((await readAll(await lean.get('awk/cafe\u0301'))).toString()).toBe('nfd');
    // Keys with empty segments (s3rver cannot store them: it keeps keys as file paths) go to the SDK's path.
    for (const key of ['awk/double//slash', '/leading']) {
      proxy.reset();
      await outcome(lean.head(key));
      await outcome(sdk.head(key));
      expect(proxy.requests.map((r) => r.path)).toEqual([`/lean/${key}`, `/lean/${key}`]);
    }
  });

  it('classifies faults injected by the proxy as the SDK path does', async () => {
    const lean = await open('lean');
    const sdk = await open('lean', { leanRequests: false });
    await lean.put('fault/k', Buffer.from('kk'));
    const ops: Record<string, (s: S3Store) => Promise<unknown>> = {
      GET: async (s) => readAll(await s.get('fault/k')),
      'GET range': async (s) => readAll(await s.get('fault/k', { offset: 1, length: 1 })),
      HEAD: (s) => s.head('fault/k'),
      PUT: (s) => s.put('fault/k', Buffer.from('kk')),
      'PUT stream': (s) => s.put('fault/k', Readable.from([Buffer.from('kk')]), { size: 2 }),
      DELETE: (s) => s.delete('fault/none'),
    };
    for (const fault of ['throttle', 'error', 'drop'] as const) {
      for (const [name, op] of Object.entries(ops)) {
        const results = [];
        for (const s of [lean, sdk]) {
          proxy.reset();
          proxy.inject(fault, 1);
          results.push(await outcome(op(s)));
          expect(proxy.requests.map((r) => r.injected)).toEqual([fault]);
        }
        expect(results[0], `${fault} ${name}`).toEqual(results[1]);
        expect(results[0], `${fault} ${name}`).toMatchObject({ code: fault === 'throttle' ? 'FERRY_THROTTLED' : 'FERRY_TRANSIENT' });
      }
    }
    expect(await outcome(lean.head('fault/k'))).toBe('ok');
  });

  it('takes 200 answers with an XML error for that error, and refuses a whole object sent for a range', async () => {
    const lean = await open('lean');
    const sdk = await open('lean', { leanRequests: false });
    await lean.put('odd/k', Buffer.from('0123456789'));
    for (const s of [lean, sdk]) {
      const isPut = (r: LoggedRequest): boolean => r.method === 'PUT';
      proxy.respond({ status: 200, body: '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>', match: isPut });
      await expect(s.put('odd/k', Buffer.from('x'))).rejects.toMatchObject({ code: 'FERRY_THROTTLED', message: 's3 PUT lean/odd/k: the service asks to slow down (503 InternalError)' });
      proxy.respond({ status: 200, body: '0123456789', match: (r) => r.method === 'GET' });
      await expect(s.get('odd/k', { offset: 2, length: 3 })).rejects.toMatchObject({ code: 'FERRY_FATAL', message: 's3 GET lean/odd/k: the service ignored the range bytes=2-4 and sent the whole object' });
      // A proxy's plain-text page is no S3 error: the status alone classifies it.
      proxy.respond({ status: 502, body: 'Bad Gateway', match: (r) => r.method === 'GET' });
      await expect(s.get('odd/k')).rejects.toMatchObject({ code: 'FERRY_TRANSIENT', message: 's3 GET lean/odd/k: service error (502)' });
    }
    expect((await readAll(await lean.get('odd/k'))).toString()).toBe('0123456789');
  });

  it('aborts requests with the signal, before sending and while a body streams', async () => {
    const s = await open('lean');
    const size = 24 * MiB;
    await s.put('abort/big', patternStream(size, 2), { size });
    const aborted = AbortSignal.abort();
    proxy.reset();
    await expect(s.get('abort/big', { signal: aborted })).rejects.toMatchObject({ code: 'FERRY_ABORTED' });
    await expect(s.head('abort/big', { signal: aborted })).rejects.toMatchObject({ code: 'FERRY_ABORTED' });
    await expect(s.put('abort/x', Buffer.from('x'), { signal: aborted })).rejects.toMatchObject({ code: 'FERRY_ABORTED' });
    await expect(s.delete('abort/big', { signal: aborted })).rejects.toMatchObject({ code: 'FERRY_ABORTED' });
    expect(proxy.requests).toEqual([]);

    const during = new AbortController();
    const body = await s.get('abort/big', { signal: during.signal });
    const chunks = body[Symbol.asyncIterator]();
    expect((await chunks.next()).done).toBe(false);
    during.abort();
    let read = 0;
    const drained = (async () => {
      for (let r = await chunks.next(); !r.done; r = await chunks.next()) read += (r.value as Buffer).length;
    })();
    await expect(drained).rejects.toMatchObject({ code: 'FERRY_ABORTED' });
    expect(read).toBeLessThan(size);

    // A stream body is cut off too, and nothing is stored.
    const stop = new AbortController();
    const slow = new Readable({ read() {} });
    slow.push(Buffer.alloc(1024));
    const put = s.put('abort/slow', slow, { size: 4096, signal: stop.signal });
    setTimeout(() => stop.abort(), 100);
    await expect(put).rejects.toMatchObject({ code: 'FERRY_ABORTED' });
    await expect(s.head('abort/slow')).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
  });

  it('follows a region redirect once, and sends the next requests to that region', async () => {
    // On AWS's default endpoint (s3://BUCKET) the store follows redirects; here the proxy plays S3.
    const settings = { ...resolveSettings(parseAddress(`minio://S3RVER:S3RVER@${proxy.endpoint}/lean`), { env: {} }), followRegionRedirects: true };
    const s = new S3Store(settings);
    stores.push(s);
    const moved = (method: string): Parameters<FaultProxy['respond']>[0] => ({
      status: 301,
      headers: { 'x-amz-bucket-region': 'eu-west-3' },
      body: '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint.</Message></Error>',
      match: (r) => r.method === method,
    });
    const regions = (): (string | undefined)[] => proxy.requests.map((r) => /Credential=[^/]+\/\d{8}\/([^/]+)\//.exec(r.headers['authorization'] ?? '')?.[1]);
    proxy.reset();
    proxy.respond(moved('PUT'));
    await s.put('moved/k', Buffer.from('moved'));
    expect((await readAll(await s.get('moved/k'))).toString()).toBe('moved');
    expect(proxy.requests.map((r) => `${r.method} ${r.status}`)).toEqual(['PUT 301', 'PUT 200', 'GET 200']);
    expect(regions()).toEqual(['us-east-1', 'eu-west-3', 'eu-west-3']);

    // A stream cannot be sent twice: the next attempt (ferry's retry) goes to the new region.
    const t = new S3Store(settings);
    stores.push(t);
    proxy.reset();
    proxy.respond(moved('PUT'));
    await expect(t.put('moved/s', Readable.from([Buffer.from('s')]), { size: 1 })).rejects.toMatchObject({
      code: 'FERRY_TRANSIENT',
      message: 's3 PUT lean/moved/s: the bucket is in eu-west-3, not us-east-1; the next attempt goes there (301)',
    });
    await t.put('moved/s', Readable.from([Buffer.from('s')]), { size: 1 });
    expect(regions()).toEqual(['us-east-1', 'eu-west-3']);

    // Without redirects to follow (an explicit endpoint), a redirect is an error naming the cause.
    const fixed = await open('lean');
    proxy.respond(moved('GET'));
    await expect(fixed.get('moved/k')).rejects.toMatchObject({ code: 'FERRY_FATAL', message: expect.stringContaining('(301 PermanentRedirect): the bucket is in another region') });
  });
});

describe('parseListPage', () => {
  it('reads keys, sizes, times, etags, prefixes and the continuation, with XML escapes', async () => {
    const { parseListPage } = await import('../../../src/shared/storage/listing-xml.js');
    const xml = `<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>p/</Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter><IsTruncated>true</IsTruncated>
<Contents><Key>p/a&amp;b &lt;c&gt; &quot;q&quot; &#39;s&#39; &#x1F600;</Key><LastModified>2024-01-02T03:04:05.000Z</LastModified><ETag>&quot;abc&quot;</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>
<Contents><Key>p/empty</Key><LastModified>2024-01-02T03:04:06.000Z</LastModified><ETag>"d41d"</ETag><Size>0</Size><Owner><ID>x</ID></Owner></Contents>
<CommonPrefixes><Prefix>p/dir/</Prefix></CommonPrefixes><CommonPrefixes><Prefix>p/x&amp;y/</Prefix></CommonPrefixes>
<NextContinuationToken>tok+en/==</NextContinuationToken></ListBucketResult>`;
    expect(parseListPage(xml)).toEqual({
      contents: [
        { key: `p/a&b <c> "q" 's' \u{1F600}`, size: 12, mtime: Date.UTC(2024, 0, 2, 3, 4, 5), etag: 'abc' },
        { key: 'p/empty', size: 0, mtime: Date.UTC(2024, 0, 2, 3, 4, 6), etag: 'd41d' },
      ],
      prefixes: ['p/dir/', 'p/x&y/'],
      truncated: true,
      nextToken: 'tok+en/==',
    });
    expect(parseListPage('<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>')).toEqual({ contents: [], prefixes: [], truncated: false });
  });
});

describe('SigV4', () => {
  it("matches AWS's published example (GET Object with a range)", async () => {
    const { SigV4 } = await import('../../../src/shared/storage/s3/sigv4.js');
    const headers: Record<string, string> = {
      host: 'examplebucket.s3.amazonaws.com',
      range: 'bytes=0-9',
      'x-amz-content-sha256': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    };
    new SigV4('s3').sign('GET', '/test.txt', {}, headers, { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' }, 'us-east-1', new Date('2013-05-24T00:00:00Z'));
    expect(headers['authorization']).toBe(
      'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41',
    );
  });
});
