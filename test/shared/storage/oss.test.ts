import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { parseAddress } from '../../../src/shared/storage/address.js';
import { compareKeys } from '../../../src/shared/storage/keys.js';
import { resolveCredentials, resolveEndpoint } from '../../../src/shared/storage/oss/config.js';
import { ossBackend, OssStore, type OssInternalOptions } from '../../../src/shared/storage/oss/index.js';
import { BackendRegistry } from '../../../src/shared/storage/registry.js';
import { OssServer } from '../../support/oss-server.js';
import { describeConformance, listAll, patternStream, readAll, sha256 } from './conformance.js';

const AK = 'LTAI5tFerryTestKey';
const SK = 'ferry-test-secret-value';
const ENDPOINT = 'oss-cn-hangzhou.aliyuncs.com';

describeConformance('oss', async () => {
  const server = await OssServer.start({ credentials: [{ accessKeyId: AK, accessKeySecret: SK }], buckets: ['conformance'] });
  const open = (secret: string): OssStore => new OssStore(parseAddress(`oss://${AK}:${secret}@conformance.${ENDPOINT}`), {}, { connectTo: server.url });
  return {
    store: open(SK),
    cleanup: () => server.close(),
    emptySegments: true,
    maxKeyBytes: 1023,
    maxNameBytes: 1000,
    inject: (fault, count) => server.inject(fault, count),
    openWithBadCredentials: async () => open('not-the-secret'),
    // Past the 8 MiB of one PutObject: three 8 MiB parts.
    multipartBytes: 20 * 1024 * 1024,
    failNextPart: () => server.inject('error', 1, 'UploadPart'),
    pendingUploads: async () => server.pendingUploads(),
  };
});

describe('oss addresses', () => {
  it('derives endpoint, region and scheme from the address', () => {
    const a = parseAddress('oss://bbb.oss-cn-hangzhou.aliyuncs.com/prefix');
    expect([a.bucket, a.endpoint, a.prefix]).toEqual(['bbb', 'oss-cn-hangzhou.aliyuncs.com', 'prefix']);
    expect(resolveEndpoint(a)).toEqual({ host: 'oss-cn-hangzhou.aliyuncs.com', url: 'https://oss-cn-hangzhou.aliyuncs.com', region: 'oss-cn-hangzhou', secure: true, internal: false });
    expect(resolveEndpoint(a, { noHttps: true })).toMatchObject({ url: 'http://oss-cn-hangzhou.aliyuncs.com', secure: false });
    // Internal endpoints speak plain HTTP inside Aliyun's network (juicefs's rule).
    expect(resolveEndpoint(parseAddress('oss://bbb.oss-cn-beijing-internal.aliyuncs.com'))).toEqual({
      host: 'oss-cn-beijing-internal.aliyuncs.com',
      url: 'http://oss-cn-beijing-internal.aliyuncs.com',
      region: 'oss-cn-beijing',
      secure: false,
      internal: true,
    });
    expect(resolveEndpoint(parseAddress('oss://bbb.vpc100-oss-cn-shanghai.aliyuncs.com'))).toMatchObject({ url: 'http://vpc100-oss-cn-shanghai.aliyuncs.com', region: 'vpc100-oss-cn-shanghai', secure: false });
    expect(resolveEndpoint(parseAddress('oss://bbb.OSS-CN-Shenzhen.aliyuncs.com'))).toMatchObject({ host: 'oss-cn-shenzhen.aliyuncs.com', region: 'oss-cn-shenzhen', secure: true });
    // A custom domain keeps HTTPS and its port.
    expect(resolveEndpoint(parseAddress('oss://bbb.oss.example.com:8443/x'))).toMatchObject({ url: 'https://oss.example.com:8443', region: 'oss-cn-hangzhou' });
  });

  it('asks for the endpoint when the address has none', () => {
    expect(() => resolveEndpoint(parseAddress('oss://bbb/prefix'))).toThrow(expect.objectContaining({ code: 'FERRY_USAGE', message: expect.stringContaining('oss://bbb.oss-cn-hangzhou.aliyuncs.com') }));
  });

  it('takes credentials from the address, then ALIBABA_CLOUD_*, then OSS_*', () => {
    const env = {
      ALIBABA_CLOUD_ACCESS_KEY_ID: 'ak1',
      ALIBABA_CLOUD_ACCESS_KEY_SECRET: 'sk1',
      ALIBABA_CLOUD_SECURITY_TOKEN: 'tk1',
      OSS_ACCESS_KEY_ID: 'ak2',
      OSS_ACCESS_KEY_SECRET: 'sk2',
      OSS_SESSION_TOKEN: 'tk2',
    };
    expect(resolveCredentials(parseAddress('oss://a:s:t@bbb.oss-cn-hangzhou.aliyuncs.com'), env)).toEqual({ accessKeyId: 'a', accessKeySecret: 's', securityToken: 't', source: 'address' });
    expect(resolveCredentials(parseAddress('oss://a%3Ab:s%2Fc@bbb.oss-cn-hangzhou.aliyuncs.com'), {})).toMatchObject({ accessKeyId: 'a:b', accessKeySecret: 's/c' });
    expect(resolveCredentials(parseAddress('oss://bbb.oss-cn-hangzhou.aliyuncs.com'), env)).toEqual({ accessKeyId: 'ak1', accessKeySecret: 'sk1', securityToken: 'tk1', source: 'ALIBABA_CLOUD_*' });
    const { ALIBABA_CLOUD_ACCESS_KEY_SECRET: _, ...onlyOss } = env;
    expect(resolveCredentials(parseAddress('oss://bbb.oss-cn-hangzhou.aliyuncs.com'), onlyOss)).toEqual({ accessKeyId: 'ak2', accessKeySecret: 'sk2', securityToken: 'tk2', source: 'OSS_*' });
    expect(() => resolveCredentials(parseAddress('oss://bbb.oss-cn-hangzhou.aliyuncs.com'), {})).toThrow(expect.objectContaining({ code: 'FERRY_USAGE', message: expect.stringContaining('ALIBABA_CLOUD_ACCESS_KEY_ID') }));
    expect(() => resolveCredentials(parseAddress('oss://ak@bbb.oss-cn-hangzhou.aliyuncs.com'), env)).toThrow(expect.objectContaining({ code: 'FERRY_USAGE' }));
  });

  it('opens through the registry without putting the secret in the description', async () => {
    const r = new BackendRegistry();
    r.register(ossBackend);
    const s = await r.open(`oss://${AK}:${SK}@bbb.oss-cn-hangzhou.aliyuncs.com/some/prefix/`);
    try {
      expect(s.scheme).toBe('oss');
      expect(s.description).toBe('oss://bbb.oss-cn-hangzhou.aliyuncs.com/');
      expect(s.features.copy?.scope).toBe(`oss:oss-cn-hangzhou.aliyuncs.com:${AK}`);
      expect(JSON.stringify(s.features)).not.toContain(SK);
      expect(s.features.multipart).toEqual({ minPartSize: 100 * 1024, maxPartSize: 5 * 1024 ** 3, maxParts: 10_000 });
    } finally {
      await s.close?.();
    }
    // The internal endpoint of a region is the same account and data: the same copy scope.
    const internal = new OssStore(parseAddress(`oss://${AK}:${SK}@bbb.oss-cn-hangzhou-internal.aliyuncs.com`), {});
    expect(internal.features.copy?.scope).toBe(`oss:oss-cn-hangzhou.aliyuncs.com:${AK}`);
    await internal.close();
  });
});

describe('oss backend', () => {
  const STS = { accessKeyId: 'STS.ferryTemporary', accessKeySecret: 'sts-secret', securityToken: 'CAIS-ferry-token' };
  let server: OssServer;
  const stores: OssStore[] = [];
  const open = (bucket: string, options: { address?: string; env?: NodeJS.ProcessEnv; storageClass?: string; limits?: OssInternalOptions['limits']; connectTo?: string; endpoint?: string } = {}): OssStore => {
    const creds = options.address ?? `${AK}:${SK}@`;
    const s = new OssStore(
      parseAddress(`oss://${creds}${bucket}.${options.endpoint ?? ENDPOINT}`),
      { env: options.env ?? {}, ...(options.storageClass ? { storageClass: options.storageClass } : {}) },
      { connectTo: options.connectTo ?? server.url, ...(options.limits ? { limits: options.limits } : {}) },
    );
    stores.push(s);
    return s;
  };
  const since = (n: number) => server.requests.slice(n);

  beforeAll(async () => {
    server = await OssServer.start({ credentials: [{ accessKeyId: AK, accessKeySecret: SK }, STS], buckets: ['alpha', 'beta'] });
  });
  afterAll(async () => {
    for (const s of stores) await s.close();
    await server.close();
  });

  it('creates conditionally with x-oss-forbid-overwrite: true on PutObject, InitiateMultipartUpload and CompleteMultipartUpload, signed', async () => {
    // A claim marker must never overwrite another manager's: OSS refuses such a write with 409 FileAlreadyExists.
    const s = open('alpha');
    const n = server.requests.length;
    await s.put('cond/claim', Buffer.from('mine'), { size: 4, ifAbsent: true });
    await expect(s.put('cond/claim', Buffer.from('theirs'), { size: 6, ifAbsent: true })).rejects.toMatchObject({ code: 'FERRY_ALREADY_EXISTS' });
    const size = 20 * 1024 * 1024;
    await expect(s.put('cond/claim', patternStream(size, 2), { size, ifAbsent: true })).rejects.toMatchObject({ code: 'FERRY_ALREADY_EXISTS' });
    expect((await readAll(await s.get('cond/claim'))).toString()).toBe('mine');
    expect(server.pendingUploads()).toBe(0);
    const writes = since(n).filter((r) => ['PutObject', 'InitiateMultipartUpload', 'CompleteMultipartUpload'].includes(r.op));
    expect(writes.map((r) => [r.op, r.headers['x-oss-forbid-overwrite'], r.status])).toEqual([
      ['PutObject', 'true', 200],
      ['PutObject', 'true', 409],
      ['InitiateMultipartUpload', 'true', 409],
    ]);
    // Absent at the start, there at the end: the completion is refused, and the upload aborted.
    const late = s.put('cond/late', patternStream(size, 3), { size, ifAbsent: true });
    while (!server.requests.some((r) => r.op === 'UploadPart' && r.key === 'cond/late')) await new Promise((r) => setTimeout(r, 5));
    await s.put('cond/late', Buffer.from('first'), { size: 5, ifAbsent: true });
    await expect(late).rejects.toMatchObject({ code: 'FERRY_ALREADY_EXISTS' });
    expect((await readAll(await s.get('cond/late'))).toString()).toBe('first');
    expect(server.pendingUploads()).toBe(0);
    expect(since(n).filter((r) => r.key === 'cond/late' && r.op === 'CompleteMultipartUpload').map((r) => [r.headers['x-oss-forbid-overwrite'], r.status])).toEqual([['true', 409]]);
    // Without it a put still replaces.
    await s.put('cond/claim', Buffer.from('over'), { size: 4 });
    expect((await readAll(await s.get('cond/claim'))).toString()).toBe('over');
  });

  it('connects to the IP but sends the virtual-host Host header of the endpoint', async () => {
    const n = server.requests.length;
    await open('alpha').put('host/a', Buffer.from('a'));
    await open('beta', { endpoint: 'oss-cn-beijing-internal.aliyuncs.com' }).put('host/b', Buffer.from('b'));
    expect(since(n).map((r) => [r.op, r.host, r.bucket, r.status])).toEqual([
      ['PutObject', 'alpha.oss-cn-hangzhou.aliyuncs.com', 'alpha', 200],
      ['PutObject', 'beta.oss-cn-beijing-internal.aliyuncs.com', 'beta', 200],
    ]);
    expect(since(n)[0]!.headers.authorization).toMatch(new RegExp(`^OSS ${AK}:[A-Za-z0-9+/]+=*$`));
  });

  it('says which bucket does not exist', async () => {
    const s = open('no-such-bucket');
    const list = listAll(s, { prefix: 'x/' });
    await expect(list).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND', message: expect.stringContaining('bucket "no-such-bucket" does not exist') });
    await expect(list).rejects.toThrow(/^oss LIST no-such-bucket\/x\/\*: bucket "no-such-bucket" does not exist at 127\.0\.0\.1:\d+ \(404 NoSuchBucket\)$/);
    await expect(s.put('k', Buffer.from('x'))).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND', message: expect.stringContaining('bucket "no-such-bucket" does not exist') });
  });

  it('names operation, bucket and key in errors, and never the secret', async () => {
    const s = open('alpha');
    await expect(s.head('missing/key.txt')).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND', message: 'oss HEAD alpha/missing/key.txt: not found (no such key, or no bucket "alpha") (404)' });
    await expect(s.copyFrom('copied', s.copySource('missing/key.txt'), { size: 1 })).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND', message: 'oss COPY alpha/copied (from alpha/missing/key.txt): not found (404 NoSuchKey)' });
    await expect(s.get('missing/key.txt')).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND', message: expect.stringMatching(/^oss GET alpha\/missing\/key\.txt: not found/) });
    const bad = open('alpha', { address: `${AK}:wrong-secret@` });
    for (const p of [bad.head('basic/x'), bad.put('basic/x', Buffer.from('x')), listAll(bad)]) {
      const err = (await p.then(() => undefined, (e: unknown) => e)) as Error & { code: string };
      expect(err.code).toBe('FERRY_PERMISSION_DENIED');
      expect(err.message).toMatch(/^oss (HEAD|PUT|LIST) alpha\/.*signature was refused.*\(403 SignatureDoesNotMatch\)$/);
      expect(err.message).not.toContain('wrong-secret');
    }
    const unknown = open('alpha', { address: 'LTAInobody:whatever@' });
    await expect(unknown.head('x')).rejects.toMatchObject({ code: 'FERRY_PERMISSION_DENIED', message: expect.stringContaining('InvalidAccessKeyId') });
    // A leading '/' would be stripped by ali-oss and write another key: refused before any request.
    const n = server.requests.length;
    await expect(s.put('/abs', Buffer.from('x'))).rejects.toMatchObject({ code: 'FERRY_FATAL' });
    await expect(s.delete('')).rejects.toMatchObject({ code: 'FERRY_FATAL' });
    expect(server.requests.length).toBe(n);
  });

  it('refuses a skewed clock as RequestTimeTooSkewed', async () => {
    const skewed = await OssServer.start({ credentials: [{ accessKeyId: AK, accessKeySecret: SK }], buckets: ['alpha'], clockOffsetMs: 20 * 60_000 });
    try {
      await expect(open('alpha', { connectTo: skewed.url }).head('x')).rejects.toMatchObject({ code: 'FERRY_PERMISSION_DENIED', message: expect.stringContaining('(403 RequestTimeTooSkewed)') });
    } finally {
      await skewed.close();
    }
  });

  it('names the endpoint it cannot reach', async () => {
    await expect(open('alpha', { connectTo: 'http://127.0.0.1:1' }).head('x')).rejects.toMatchObject({ code: 'FERRY_TRANSIENT', message: expect.stringMatching(/^oss HEAD alpha\/x: cannot reach 127\.0\.0\.1:1 \(.*ECONNREFUSED.*\)$/) });
  });

  it('makes one attempt per call: the SDK does not retry', async () => {
    const s = open('alpha');
    await s.put('once/x', Buffer.from('x'));
    for (const [fault, code] of [['throttle', 'FERRY_THROTTLED'], ['error', 'FERRY_TRANSIENT'], ['drop', 'FERRY_TRANSIENT']] as const) {
      const n = server.requests.length;
      server.inject(fault, 1);
      await expect(s.get('once/x')).rejects.toMatchObject({ code });
      expect(since(n).map((r) => r.op)).toEqual(['GetObject']);
    }
    const n = server.requests.length;
    server.inject('throttle', 1, 'ListObjectsV2');
    await expect(listAll(s, { prefix: 'once/' })).rejects.toMatchObject({ code: 'FERRY_THROTTLED', message: expect.stringContaining('(503 SlowDown)') });
    expect(since(n).length).toBe(1);
  });

  it('fails a download cut short instead of returning fewer bytes', async () => {
    const s = open('alpha');
    await s.put('cut/obj', patternStream(3 * 1024 * 1024, 3), { size: 3 * 1024 * 1024 });
    server.inject('truncate', 1);
    await expect(readAll(await s.get('cut/obj'))).rejects.toMatchObject({ code: 'FERRY_TRANSIENT', message: expect.stringContaining('oss GET alpha/cut/obj') });
    expect((await sha256(await s.get('cut/obj'))).hex).toBe((await sha256(patternStream(3 * 1024 * 1024, 3))).hex);
  });

  it('asks for standard range behaviour and reads past the end as empty', async () => {
    const s = open('alpha');
    await s.put('range/ten', Buffer.from('0123456789'));
    const n = server.requests.length;
    expect((await readAll(await s.get('range/ten', { offset: 10 }))).length).toBe(0);
    expect((await readAll(await s.get('range/ten', { offset: 3, length: 2 }))).toString()).toBe('34');
    expect((await readAll(await s.get('range/ten', { offset: 4, length: 0 }))).length).toBe(0);
    const gets = since(n).filter((r) => r.op === 'GetObject');
    expect(gets.map((r) => [r.headers.range, r.headers['x-oss-range-behavior'], r.status])).toEqual([
      ['bytes=10-', 'standard', 416],
      ['bytes=3-4', 'standard', 206],
    ]);
    await expect(s.get('range/none', { offset: 10 })).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
  });

  it('pages ListObjectsV2 with continuation tokens, URL-encoded keys and start-after', async () => {
    const s = open('alpha');
    const keys = Array.from({ length: 230 }, (_, i) => `page/k${String(i).padStart(3, '0')}`);
    // Characters XML 1.0 cannot carry, and ones it must escape, arrive intact through encoding-type=url.
    keys.push('page/ctl\u0001\u001f', 'page/<amp&>"', 'page/plus+ space', 'page/pct%2F');
    for (const k of keys) await s.put(k, Buffer.from(k));
    const n = server.requests.length;
    const pages: number[] = [];
    for await (const page of s.list({ prefix: 'page/' })) pages.push(page.length);
    expect(pages).toEqual([100, 100, 34]);
    const lists = since(n);
    expect(lists.map((r) => [r.op, r.query['max-keys'], r.query['encoding-type'], r.query['continuation-token'] !== undefined])).toEqual([
      ['ListObjectsV2', '1000', 'url', false],
      ['ListObjectsV2', '1000', 'url', true],
      ['ListObjectsV2', '1000', 'url', true],
    ]);
    expect((await listAll(s, { prefix: 'page/' })).map((e) => e.key)).toEqual([...keys].sort(compareKeys));
    const after = await listAll(s, { prefix: 'page/', startAfter: 'page/k228' });
    expect(after.map((e) => e.key)).toEqual(['page/k229', 'page/pct%2F', 'page/plus+ space']);
    expect(server.requests.at(-1)!.query['start-after']).toBe('page/k228');
    for (const k of keys.slice(-4)) expect((await readAll(await s.get(k))).toString()).toBe(k);
  });

  it('lists directory markers and common prefixes as directories', async () => {
    const s = open('alpha');
    await s.put('dirs/marker/', Buffer.alloc(0));
    await s.put('dirs/sub/file', Buffer.from('abc'));
    await s.put('dirs/top', Buffer.from('t'));
    expect((await listAll(s, { prefix: 'dirs/' })).map((e) => [e.key, e.isDir, e.size])).toEqual([
      ['dirs/marker/', true, 0],
      ['dirs/sub/file', false, 3],
      ['dirs/top', false, 1],
    ]);
    expect((await listAll(s, { prefix: 'dirs/', delimiter: '/' })).map((e) => [e.key, e.isDir])).toEqual([
      ['dirs/marker/', true],
      ['dirs/sub/', true],
      ['dirs/top', false],
    ]);
  });

  it('uploads a 100 MiB object in 8 MiB parts and an unsized stream in parts once it outgrows one', async () => {
    const s = open('alpha');
    const size = 100 * 1024 * 1024;
    let n = server.requests.length;
    await s.put('mp/big', patternStream(size, 11), { size });
    const ops = since(n).map((r) => r.op);
    expect(ops.filter((o) => o === 'UploadPart').length).toBe(13);
    expect([ops[0], ops.at(-1), ops.includes('PutObject')]).toEqual(['InitiateMultipartUpload', 'CompleteMultipartUpload', false]);
    const stored = server.stat('alpha', 'mp/big')!;
    expect([stored.size, stored.type, stored.etag.endsWith('-13"')]).toEqual([size, 'Multipart', true]);
    expect((await sha256(await s.get('mp/big'))).hex).toBe((await sha256(patternStream(size, 11))).hex);

    n = server.requests.length;
    await s.put('mp/unsized', patternStream(20 * 1024 * 1024, 12));
    expect(since(n).map((r) => r.op)).toEqual(['InitiateMultipartUpload', 'UploadPart', 'UploadPart', 'UploadPart', 'CompleteMultipartUpload']);
    expect((await s.head('mp/unsized')).size).toBe(20 * 1024 * 1024);

    n = server.requests.length;
    await s.put('mp/small-unsized', patternStream(1024 * 1024, 13));
    await s.put('mp/empty-unsized', Readable.from([]));
    expect(since(n).map((r) => r.op)).toEqual(['PutObject', 'PutObject']);
    expect((await s.head('mp/empty-unsized')).size).toBe(0);
  }, 60_000);

  it('aborts the multipart upload when a part fails', async () => {
    const s = open('alpha', { limits: { multipartThreshold: 1024 * 1024, partSize: 256 * 1024 } });
    server.inject('error', 1, 'UploadPart');
    const n = server.requests.length;
    await expect(s.put('mp/fails', patternStream(2 * 1024 * 1024, 5), { size: 2 * 1024 * 1024 })).rejects.toMatchObject({ code: 'FERRY_TRANSIENT', message: expect.stringContaining('oss PUT part') });
    expect(since(n).filter((r) => r.op === 'AbortMultipartUpload').map((r) => r.status)).toEqual([204]);
    expect(server.pendingUploads()).toBe(0);
    await expect(s.head('mp/fails')).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
  });

  it('refuses a source that is shorter or longer than announced', async () => {
    // A request body cut mid-request made urllib print "callback twice" warnings on the user's terminal.
    const warn = vi.spyOn(console, 'warn');
    const s = open('alpha', { limits: { multipartThreshold: 1024 * 1024, partSize: 256 * 1024 } });
    await expect(s.put('short/single', patternStream(1000, 1), { size: 2000 })).rejects.toMatchObject({ code: 'FERRY_SOURCE_CHANGED' });
    await expect(s.put('short/multi', patternStream(1_500_000, 1), { size: 2_000_000 })).rejects.toMatchObject({ code: 'FERRY_SOURCE_CHANGED' });
    await expect(s.put('short/long', patternStream(3000, 1), { size: 2000 })).rejects.toMatchObject({ code: 'FERRY_SOURCE_CHANGED' });
    await expect(s.put('short/buffer', Buffer.alloc(10), { size: 11 })).rejects.toMatchObject({ code: 'FERRY_SOURCE_CHANGED' });
    expect(await listAll(s, { prefix: 'short/' })).toEqual([]);
    expect(server.pendingUploads()).toBe(0);
    expect(warn).not.toHaveBeenCalled();
    warn.mockRestore();
  });

  it('stops an upload when its signal aborts, and aborts the multipart upload on the server', async () => {
    const s = open('alpha', { limits: { multipartThreshold: 1024 * 1024, partSize: 256 * 1024 } });
    const ac = new AbortController();
    const source = Readable.from(
      (async function* () {
        for (let i = 0; i < 32; i++) {
          if (i === 6) ac.abort();
          yield Buffer.alloc(128 * 1024, i);
        }
      })(),
    );
    const n = server.requests.length;
    await expect(s.put('abort/x', source, { signal: ac.signal })).rejects.toMatchObject({ code: 'FERRY_ABORTED' });
    const ops = since(n).map((r) => r.op);
    expect([ops[0], ops.at(-1), ops.includes('CompleteMultipartUpload')]).toEqual(['InitiateMultipartUpload', 'AbortMultipartUpload', false]);
    expect(source.destroyed).toBe(true);
    expect(server.pendingUploads()).toBe(0);
    await s.put('abort/y', Buffer.from('0123456789'));
    const reading = new AbortController();
    const stream = await s.get('abort/y', { signal: reading.signal });
    reading.abort();
    await expect(readAll(stream)).rejects.toMatchObject({ code: 'FERRY_ABORTED' });
  });

  it('sends the storage class to the server', async () => {
    const ia = open('alpha', { storageClass: 'IA', limits: { multipartThreshold: 1024 * 1024, partSize: 256 * 1024 } });
    await ia.put('sc/small', Buffer.from('x'));
    await ia.put('sc/stream', patternStream(1000, 2), { size: 1000 });
    await ia.put('sc/multi', patternStream(2 * 1024 * 1024, 2), { size: 2 * 1024 * 1024 });
    await ia.put('sc/archive', Buffer.from('y'), { storageClass: 'Archive' });
    expect(['sc/small', 'sc/stream', 'sc/multi', 'sc/archive'].map((k) => server.stat('alpha', k)?.storageClass)).toEqual(['IA', 'IA', 'IA', 'Archive']);
    expect(server.requests.filter((r) => r.op === 'InitiateMultipartUpload').at(-1)!.headers['x-oss-storage-class']).toBe('IA');
    const plain = open('alpha');
    await plain.put('sc/standard', Buffer.from('z'));
    expect(server.stat('alpha', 'sc/standard')?.storageClass).toBe('Standard');
    await expect(open('alpha', { storageClass: 'Bogus' }).put('sc/bad', Buffer.from('z'))).rejects.toMatchObject({ code: 'FERRY_FATAL', message: expect.stringContaining('(400 InvalidArgument)') });
  });

  it('copies server-side between buckets of the same scope, in parts above the copy limit', async () => {
    const a = open('alpha');
    const b = open('beta', { storageClass: 'IA', limits: { copyLimit: 1024 * 1024, copyPartSize: 256 * 1024 } });
    expect(a.features.copy).toEqual(b.features.copy);
    await a.put('copy/small', Buffer.from('copied bytes'));
    let n = server.requests.length;
    await b.copyFrom('copy/into', a.copySource('copy/small'), { size: 12 });
    expect(since(n).map((r) => [r.op, r.bucket, r.headers['x-oss-copy-source']])).toEqual([['CopyObject', 'beta', '/alpha/copy%2Fsmall']]);
    expect((await readAll(await b.get('copy/into'))).toString()).toBe('copied bytes');
    expect(server.stat('beta', 'copy/into')?.storageClass).toBe('IA');

    const size = 1024 * 1024 + 300_000;
    await a.put('copy/big ü', patternStream(size, 9), { size });
    n = server.requests.length;
    await b.copyFrom('copy/big-copy', a.copySource('copy/big ü'), { size });
    const ops = since(n);
    expect(ops.filter((r) => r.op === 'UploadPartCopy').map((r) => r.headers['x-oss-copy-source-range']).sort()).toEqual(
      ['bytes=0-262143', 'bytes=262144-524287', 'bytes=524288-786431', 'bytes=786432-1048575', 'bytes=1048576-1310719', `bytes=1310720-${size - 1}`].sort(),
    );
    expect(ops.map((r) => r.op).filter((o) => o !== 'UploadPartCopy')).toEqual(['InitiateMultipartUpload', 'CompleteMultipartUpload']);
    expect((await sha256(await b.get('copy/big-copy'))).hex).toBe((await sha256(patternStream(size, 9))).hex);

    const other = open('beta', { address: `${STS.accessKeyId}:${STS.accessKeySecret}:${STS.securityToken}@` });
    await expect(other.copyFrom('copy/x', a.copySource('copy/small'), { size: 12 })).rejects.toMatchObject({ code: 'FERRY_FATAL' });
    await expect(b.copyFrom('copy/none', a.copySource('copy/missing'), { size: 1 })).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
  });

  it('reads STS credentials from the environment', async () => {
    for (const env of [
      { ALIBABA_CLOUD_ACCESS_KEY_ID: STS.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: STS.accessKeySecret, ALIBABA_CLOUD_SECURITY_TOKEN: STS.securityToken },
      { OSS_ACCESS_KEY_ID: STS.accessKeyId, OSS_ACCESS_KEY_SECRET: STS.accessKeySecret, OSS_SESSION_TOKEN: STS.securityToken },
    ]) {
      const s = open('alpha', { address: '', env });
      const n = server.requests.length;
      await s.put('env/x', Buffer.from('from env'));
      expect((await readAll(await s.get('env/x'))).toString()).toBe('from env');
      expect(since(n).map((r) => [r.status, r.headers['x-oss-security-token'], r.headers.authorization?.startsWith(`OSS ${STS.accessKeyId}:`)])).toEqual([
        [200, STS.securityToken, true],
        [200, STS.securityToken, true],
      ]);
    }
    const wrongToken = open('alpha', { address: '', env: { ALIBABA_CLOUD_ACCESS_KEY_ID: STS.accessKeyId, ALIBABA_CLOUD_ACCESS_KEY_SECRET: STS.accessKeySecret, ALIBABA_CLOUD_SECURITY_TOKEN: 'stale' } });
    await expect(wrongToken.head('env/x')).rejects.toMatchObject({ code: 'FERRY_PERMISSION_DENIED' });
  });

  it('deletes in batches of 1000 and checks that every key went', async () => {
    const s = open('alpha');
    const keys = Array.from({ length: 1003 }, (_, i) => `batch/${i}`);
    keys.push('batch/amp&eq=', 'batch/<lt>', 'batch/quote"\'', 'batch/ü日本');
    let i = 0;
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (i < keys.length) await s.put(keys[i++]!, Buffer.from('x'));
    }));
    const n = server.requests.length;
    await s.deleteMany(keys);
    expect(since(n).map((r) => [r.op, r.status])).toEqual([
      ['DeleteMultipleObjects', 200],
      ['DeleteMultipleObjects', 200],
    ]);
    expect(await listAll(s, { prefix: 'batch/' })).toEqual([]);
    await s.delete('batch/never-there');
  });
});
