import { request } from 'node:http';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAddress } from '../../../src/shared/storage/address.js';
import { cosBackend, cosConfig, openCosStore, type CosInternalOptions, type CosStore } from '../../../src/shared/storage/cos/index.js';
import { BackendRegistry } from '../../../src/shared/storage/registry.js';
import { CosServer } from '../../support/cos-server.js';
import { describeConformance, listAll, patternStream, readAll, sha256 } from './conformance.js';

const AK = 'AKIDferryTest';
const SK = 'ferry-secret-key-0123';
const TMP = { secretId: 'AKIDtemporary', secretKey: 'temporary-secret', token: 'session-token-xyz' };
const MiB = 1 << 20;

interface OpenArgs {
  bucket: string;
  ak?: string;
  sk?: string;
  env?: NodeJS.ProcessEnv;
  storageClass?: string;
  internal?: CosInternalOptions;
}

/** A store on the test server: the real virtual-host address, connected to 127.0.0.1 over HTTP. */
function openOn(server: CosServer, a: OpenArgs): CosStore {
  const creds = a.ak === '' ? '' : `${a.ak ?? AK}:${a.sk ?? SK}@`;
  const address = parseAddress(`cos://${creds}${a.bucket}.cos.${server.region}.myqcloud.com`);
  return openCosStore(address, { noHttps: true, env: a.env ?? {}, ...(a.storageClass ? { storageClass: a.storageClass } : {}) }, { connectTo: server.ip, ...a.internal });
}

describeConformance('cos', async () => {
  const bucket = 'conformance-1250000000';
  const server = await CosServer.start({ credentials: [{ secretId: AK, secretKey: SK }], buckets: [bucket] });
  return {
    store: openOn(server, { bucket }),
    cleanup: () => server.close(),
    inject: (fault, count) => server.inject(fault, count),
    openWithBadCredentials: async () => openOn(server, { bucket, sk: 'not-the-secret' }),
    // Past the 64 MiB of one PUT: five 16 MiB parts.
    multipartBytes: 65 * MiB,
    failNextPart: () => server.inject('error', 1, 'UploadPart'),
    pendingUploads: async () => server.pendingUploads,
    emptySegments: true,
    // COS's key limit; it has no limit of its own on a path segment, so the longest that fits in a key.
    maxKeyBytes: 850,
    maxNameBytes: 844,
  };
});

describe('cos addresses', () => {
  const env = { COS_SECRETID: 'AKIDenv', COS_SECRETKEY: 'env-secret' };

  it('takes bucket and region from the virtual-host address, and speaks https unless told not to', () => {
    const a = parseAddress('cos://ccc-125000.cos.ap-beijing.myqcloud.com/some/prefix');
    expect([a.bucket, a.endpoint, a.prefix]).toEqual(['ccc-125000', 'cos.ap-beijing.myqcloud.com', 'some/prefix']);
    const c = cosConfig(a, { env });
    expect(c).toMatchObject({ bucket: 'ccc-125000', region: 'ap-beijing', endpoint: 'cos.ap-beijing.myqcloud.com', https: true });
    const s = openCosStore(a, { env });
    expect(s.baseUrl).toBe('https://ccc-125000.cos.ap-beijing.myqcloud.com');
    expect(s.description).toBe('cos://ccc-125000.cos.ap-beijing.myqcloud.com');
    expect(openCosStore(a, { env, noHttps: true }).baseUrl).toBe('http://ccc-125000.cos.ap-beijing.myqcloud.com');
    expect(cosConfig(parseAddress('cos://b-1.cos-internal.ap-guangzhou.tencentcos.cn'), { env }).region).toBe('ap-guangzhou');
    expect(cosConfig(parseAddress('cos://b-1.cos.accelerate.myqcloud.com'), { env }).region).toBe('accelerate');
  });

  it('rejects addresses without APPID or region, naming the form to use', () => {
    for (const bad of ['cos://ccc.cos.ap-beijing.myqcloud.com', 'cos://ccc-125000', 'cos://ccc-125000.localhost']) {
      let err: unknown;
      try {
        cosConfig(parseAddress(bad), { env });
      } catch (e) {
        err = e;
      }
      expect(err, bad).toMatchObject({ code: 'FERRY_USAGE' });
      expect((err as Error).message).toContain('BUCKET-APPID.cos.REGION.myqcloud.com');
    }
  });

  it('takes credentials from the address first, then COS_*, then TENCENTCLOUD_*', () => {
    const addr = parseAddress('cos://AKIDaddr:addr-secret:addr-token@ccc-125000.cos.ap-beijing.myqcloud.com');
    expect(cosConfig(addr, { env }).credentials).toEqual({ secretId: 'AKIDaddr', secretKey: 'addr-secret', token: 'addr-token' });
    const bare = parseAddress('cos://ccc-125000.cos.ap-beijing.myqcloud.com');
    expect(cosConfig(bare, { env }).credentials).toEqual({ secretId: 'AKIDenv', secretKey: 'env-secret' });
    const tc = { TENCENTCLOUD_SECRETID: 'AKIDtc', TENCENTCLOUD_SECRETKEY: 'tc-secret', TENCENTCLOUD_SESSIONTOKEN: 'tc-token' };
    expect(cosConfig(bare, { env: tc }).credentials).toEqual({ secretId: 'AKIDtc', secretKey: 'tc-secret', token: 'tc-token' });
    expect(cosConfig(bare, { env: { ...tc, ...env } }).credentials.secretId).toBe('AKIDenv');
    expect(() => cosConfig(bare, { env: {} })).toThrow(/COS_SECRETID/);
  });

  it('keeps secrets out of the scope and the description', () => {
    const s = openCosStore(parseAddress('cos://AKIDaddr:addr-secret@ccc-125000.cos.ap-beijing.myqcloud.com'), {});
    expect(s.features.copy?.scope).toBe('cos:cos.ap-beijing.myqcloud.com:AKIDaddr');
    expect(JSON.stringify([s.description, s.features])).not.toContain('addr-secret');
  });

  it('opens through the registry, rooted at the prefix', async () => {
    const r = new BackendRegistry();
    r.register(cosBackend);
    const s = await r.open('cos://ccc-125000.cos.ap-beijing.myqcloud.com/pre/', { env });
    expect(s.scheme).toBe('cos');
    expect(s.features.multipart).toEqual({ minPartSize: MiB, maxPartSize: 5 * 1024 * MiB, maxParts: 10000 });
    await s.close?.();
  });
});

describe('cos backend against the test server', () => {
  let server: CosServer;
  const src = 'source-1250000000';
  const dst = 'target-1250000000';
  const stores: CosStore[] = [];
  const open = (a: OpenArgs): CosStore => {
    const s = openOn(server, a);
    stores.push(s);
    return s;
  };
  const requestsFor = (bucket: string, key: string) => server.requests.filter((r) => r.bucket === bucket && r.key === key);

  beforeAll(async () => {
    server = await CosServer.start({ credentials: [{ secretId: AK, secretKey: SK }, TMP], buckets: [src, dst] });
  });
  afterAll(async () => {
    for (const s of stores) await s.close();
    await server?.close();
  });

  it('creates conditionally with x-cos-forbid-overwrite: true on PUT Object and Complete Multipart Upload', async () => {
    // A claim marker must never overwrite another manager's: COS refuses such a write with 409 FileAlreadyExists.
    const s = open({ bucket: dst, internal: { multipartThreshold: 2 * MiB, partSize: MiB } });
    await s.put('cond/claim', Buffer.from('mine'), { size: 4, ifAbsent: true });
    await expect(s.put('cond/claim', Buffer.from('theirs'), { size: 6, ifAbsent: true })).rejects.toMatchObject({ code: 'FERRY_ALREADY_EXISTS', message: expect.stringContaining('(409 FileAlreadyExists)') });
    const size = 3 * MiB;
    await expect(s.put('cond/claim', patternStream(size, 2), { size, ifAbsent: true })).rejects.toMatchObject({ code: 'FERRY_ALREADY_EXISTS' });
    expect((await readAll(await s.get('cond/claim'))).toString()).toBe('mine');
    expect(server.pendingUploads).toBe(0);
    const writes = requestsFor(dst, 'cond/claim').filter((r) => (r.method === 'PUT' && !('partNumber' in r.query)) || (r.method === 'POST' && 'uploadId' in r.query));
    expect(writes.map((r) => [r.method, r.headers['x-cos-forbid-overwrite']])).toEqual([
      ['PUT', 'true'],
      ['PUT', 'true'],
      ['POST', 'true'],
    ]);
    // Without it a put still replaces.
    await s.put('cond/claim', Buffer.from('over'), { size: 4 });
    expect((await readAll(await s.get('cond/claim'))).toString()).toBe('over');
  });

  it('names a missing bucket as such', async () => {
    const s = open({ bucket: 'nosuch-1250000000' });
    const list = listAll(s, { prefix: 'a/' });
    await expect(list).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
    await expect(list).rejects.toThrow('cos LIST nosuch-1250000000/a/: bucket "nosuch-1250000000" does not exist in ap-beijing (404 NoSuchBucket)');
    await expect(s.get('x/y')).rejects.toThrow(/bucket "nosuch-1250000000" does not exist/);
    await expect(s.delete('x/y')).rejects.toThrow(/bucket "nosuch-1250000000" does not exist/);
    // HEAD answers carry no body, so a missing bucket and a missing key look alike.
    await expect(s.head('x/y')).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND', message: expect.stringContaining('cos HEAD nosuch-1250000000/x/y') });
  });

  it('says what failed, where, and never the secret', async () => {
    const good = open({ bucket: src });
    await good.put('msg/k', Buffer.from('x'));
    const bad = open({ bucket: src, sk: 'wrong-secret-value' });
    const err = (await bad.head('msg/k').catch((e: unknown) => e)) as Error & { code: string };
    expect(err.code).toBe('FERRY_PERMISSION_DENIED');
    expect(err.message).toContain('cos HEAD source-1250000000/msg/k: access denied (403)');
    const err2 = (await bad.get('msg/k').catch((e: unknown) => e)) as Error;
    expect(err2.message).toContain('cos GET source-1250000000/msg/k: access denied (403 SignatureDoesNotMatch)');
    expect(err2.message).not.toContain('wrong-secret-value');
    expect(JSON.stringify(err2, Object.getOwnPropertyNames(err2))).not.toContain('wrong-secret-value');
    const unknown = open({ bucket: src, ak: 'AKIDnobody' });
    await expect(unknown.get('msg/k')).rejects.toThrow(/403 InvalidAccessKeyId/);
  });

  it('names the endpoint when the connection is refused', async () => {
    const dead = await CosServer.start();
    const ip = dead.ip;
    await dead.close();
    const s = openCosStore(parseAddress(`cos://${AK}:${SK}@ccc-125000.cos.ap-beijing.myqcloud.com`), { noHttps: true }, { connectTo: ip });
    stores.push(s);
    await expect(s.head('k')).rejects.toMatchObject({
      code: 'FERRY_TRANSIENT',
      message: `cos HEAD ccc-125000/k: cannot connect to ccc-125000.cos.ap-beijing.myqcloud.com via ${ip} (ECONNREFUSED)`,
    });
  });

  // Regression: the SDK retries 5xx and network errors up to three more times on its own, which
  // doubled ferry's retries and turned injected faults into successes.
  it('makes exactly one request per call, whatever fails', async () => {
    const s = open({ bucket: src });
    await s.put('once/k', Buffer.from('v'));
    for (const [fault, code] of [
      ['throttle', 'FERRY_THROTTLED'],
      ['error', 'FERRY_TRANSIENT'],
      ['drop', 'FERRY_TRANSIENT'],
    ] as const) {
      const before = server.requests.length;
      server.inject(fault, 1);
      await expect(s.head('once/k')).rejects.toMatchObject({ code });
      server.inject(fault, 1);
      await expect(listAll(s, { prefix: 'once/' })).rejects.toMatchObject({ code });
      server.inject(fault, 1);
      await expect(s.put('once/buffer', Buffer.from('buffered bodies are retried by the SDK'))).rejects.toMatchObject({ code });
      expect(server.requests.length - before, fault).toBe(3);
    }
    server.inject('throttle', 1);
    await expect(s.head('once/k')).rejects.toThrow('cos HEAD source-1250000000/once/k: the service asks to slow down (503)');
    server.inject('error', 1);
    await expect(s.get('once/k')).rejects.toThrow('cos GET source-1250000000/once/k: server error (500 InternalError)');
    expect(server.object(src, 'once/buffer')).toBeUndefined();
    expect((await s.head('once/k')).size).toBe(1);
  });

  it('uploads a 100 MiB object in 16 MiB parts and reads it back', async () => {
    const s = open({ bucket: src });
    const size = 100 * MiB;
    const before = server.requests.length;
    await s.put('big/100m', patternStream(size, 3), { size });
    const reqs = server.requests.slice(before).filter((r) => r.key === 'big/100m');
    const parts = reqs.filter((r) => r.method === 'PUT' && 'partNumber' in r.query);
    expect(reqs.filter((r) => r.method === 'POST' && 'uploads' in r.query)).toHaveLength(1);
    expect(parts.map((r) => Number(r.query['partNumber']))).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(parts.map((r) => Number(r.headers['content-length']))).toEqual([...Array(6).fill(16 * MiB), 4 * MiB]);
    expect(reqs.filter((r) => r.method === 'POST' && 'uploadId' in r.query)).toHaveLength(1);
    expect(server.object(src, 'big/100m')).toMatchObject({ size, etag: expect.stringMatching(/-7$/) });
    expect(await sha256(await s.get('big/100m'))).toEqual(await sha256(patternStream(size, 3)));
    expect(server.pendingUploads).toBe(0);
  }, 120_000);

  it('uploads bodies of unknown size: small ones at once, large ones in buffered parts', async () => {
    const s = open({ bucket: src, internal: { partSize: 2 * MiB } });
    await s.put('unknown/small', Readable.from([Buffer.from('abc'), Buffer.from('def')]));
    expect(requestsFor(src, 'unknown/small').map((r) => r.method)).toEqual(['PUT']);
    expect((await readAll(await s.get('unknown/small'))).toString()).toBe('abcdef');
    const size = 5 * MiB + 123;
    await s.put('unknown/large', patternStream(size, 9));
    expect(requestsFor(src, 'unknown/large').filter((r) => 'partNumber' in r.query)).toHaveLength(3);
    expect(await sha256(await s.get('unknown/large'))).toEqual(await sha256(patternStream(size, 9)));
  });

  it('fails an upload whose source is shorter or longer than its size, storing nothing', async () => {
    const s = open({ bucket: src, internal: { multipartThreshold: 2 * MiB, partSize: MiB } });
    await expect(s.put('short/single', patternStream(1000), { size: 2000 })).rejects.toMatchObject({ code: 'FERRY_SOURCE_CHANGED' });
    await expect(s.put('short/long', patternStream(3000), { size: 2000 })).rejects.toMatchObject({
      code: 'FERRY_SOURCE_CHANGED',
      message: 'cos PUT source-1250000000/short/long: the source holds more than the 2000 bytes expected',
    });
    await expect(s.put('short/multi', patternStream(3 * MiB), { size: 4 * MiB })).rejects.toMatchObject({ code: 'FERRY_SOURCE_CHANGED' });
    await expect(s.put('short/multi-long', patternStream(5 * MiB), { size: 4 * MiB })).rejects.toMatchObject({ code: 'FERRY_SOURCE_CHANGED' });
    const failing = new Readable({ read() {} });
    failing.push(Buffer.alloc(MiB + 10));
    setTimeout(() => failing.destroy(Object.assign(new Error('disk on fire'), { code: 'EIO' })), 50);
    await expect(s.put('short/failing', failing, { size: 4 * MiB })).rejects.toMatchObject({ code: 'FERRY_TRANSIENT' });
    for (const k of ['short/single', 'short/long', 'short/multi', 'short/multi-long', 'short/failing']) expect(server.object(src, k), k).toBeUndefined();
    // Every multipart upload that started was aborted.
    expect(server.pendingUploads).toBe(0);
  });

  it('sends the storage class to the server', async () => {
    const s = open({ bucket: src, storageClass: 'STANDARD_IA', internal: { multipartThreshold: MiB, partSize: MiB } });
    await s.put('class/single', Buffer.from('x'));
    await s.put('class/multi', patternStream(2 * MiB + 1), { size: 2 * MiB + 1 });
    await s.put('class/per-call', Buffer.from('y'), { storageClass: 'ARCHIVE' });
    expect(server.object(src, 'class/single')?.storageClass).toBe('STANDARD_IA');
    expect(server.object(src, 'class/multi')?.storageClass).toBe('STANDARD_IA');
    expect(server.object(src, 'class/per-call')?.storageClass).toBe('ARCHIVE');
    expect(requestsFor(src, 'class/single')[0]?.headers['x-cos-storage-class']).toBe('STANDARD_IA');
    const plain = open({ bucket: src });
    await plain.put('class/none', Buffer.from('z'));
    expect(requestsFor(src, 'class/none')[0]?.headers['x-cos-storage-class']).toBeUndefined();
    await expect(plain.put('class/bad', Buffer.from('z'), { storageClass: 'GOLD' })).rejects.toMatchObject({ code: 'FERRY_FATAL', message: expect.stringContaining('400 InvalidArgument') });
  });

  it('copies server-side between two buckets of the same scope, with awkward keys', async () => {
    const a = open({ bucket: src });
    const b = open({ bucket: dst, storageClass: 'STANDARD_IA' });
    expect(b.features.copy?.scope).toBe(a.features.copy?.scope);
    const key = 'copy/ü ber+100%/a#b?c&d=e';
    await a.put(key, Buffer.from('copied bytes'));
    const before = server.requests.length;
    await b.copyFrom!('copy/dest', a.copySource(key), { size: 12 });
    const reqs = server.requests.slice(before);
    expect(reqs.map((r) => [r.method, r.bucket, r.key])).toEqual([['PUT', dst, 'copy/dest']]);
    expect(reqs[0]!.headers['x-cos-copy-source']).toBe(`${src}.cos.ap-beijing.myqcloud.com/copy/%C3%BC%20ber%2B100%25/a%23b%3Fc%26d%3De`);
    expect((await readAll(await b.get('copy/dest'))).toString()).toBe('copied bytes');
    expect(server.object(dst, 'copy/dest')?.storageClass).toBe('STANDARD_IA');
    await expect(b.copyFrom!('copy/none', a.copySource('copy/missing'), { size: 1 })).rejects.toMatchObject({
      code: 'FERRY_NOT_FOUND',
      message: expect.stringContaining('cos COPY target-1250000000/copy/none (from source-1250000000/copy/missing): the source object does not exist'),
    });
    const other = open({ bucket: dst, ak: TMP.secretId, sk: TMP.secretKey });
    expect(other.features.copy?.scope).not.toBe(a.features.copy?.scope);
    await expect(other.copyFrom!('copy/x', a.copySource(key), { size: 12 })).rejects.toMatchObject({ code: 'FERRY_FATAL' });
  });

  it('copies large objects with UploadPartCopy, part by part', async () => {
    const a = open({ bucket: src });
    const b = open({ bucket: dst, internal: { multipartCopyThreshold: 2 * MiB, copyPartSize: MiB } });
    const size = 3 * MiB + 512 * 1024;
    await a.put('copy/big', patternStream(size, 5), { size });
    const before = server.requests.length;
    await b.copyFrom!('copy/big-dest', a.copySource('copy/big'), { size });
    const parts = server.requests.slice(before).filter((r) => r.method === 'PUT' && 'partNumber' in r.query);
    expect(parts.map((r) => r.headers['x-cos-copy-source-range']).sort()).toEqual(['bytes=0-1048575', 'bytes=1048576-2097151', 'bytes=2097152-3145727', 'bytes=3145728-3670015']);
    expect(parts.every((r) => r.headers['content-length'] === '0')).toBe(true);
    expect(server.object(dst, 'copy/big-dest')?.etag).toMatch(/-4$/);
    expect(await sha256(await b.get('copy/big-dest'))).toEqual(await sha256(patternStream(size, 5)));
    // A part that cannot be copied aborts the whole upload.
    await expect(b.copyFrom!('copy/big-none', a.copySource('copy/big-missing'), { size })).rejects.toMatchObject({
      code: 'FERRY_NOT_FOUND',
      message: expect.stringMatching(/^cos COPY PART target-1250000000\/copy\/big-none \(part \d from source-1250000000\/copy\/big-missing\): the source object does not exist \(404 NoSuchKey\)$/),
    });
    expect(server.object(dst, 'copy/big-none')).toBeUndefined();
    expect(server.pendingUploads).toBe(0);
  });

  it('reads credentials from the environment, with a session token', async () => {
    const viaTc = open({ bucket: src, ak: '', env: { TENCENTCLOUD_SECRETID: TMP.secretId, TENCENTCLOUD_SECRETKEY: TMP.secretKey, TENCENTCLOUD_SESSIONTOKEN: TMP.token } });
    await viaTc.put('env/tc', Buffer.from('temporary'));
    expect(requestsFor(src, 'env/tc')[0]?.headers['x-cos-security-token']).toBe(TMP.token);
    const viaCos = open({ bucket: src, ak: '', env: { COS_SECRETID: AK, COS_SECRETKEY: SK } });
    expect((await readAll(await viaCos.get('env/tc'))).toString()).toBe('temporary');
    const badToken = open({ bucket: src, ak: '', env: { TENCENTCLOUD_SECRETID: TMP.secretId, TENCENTCLOUD_SECRETKEY: TMP.secretKey, TENCENTCLOUD_SESSIONTOKEN: 'stale' } });
    await expect(badToken.get('env/tc')).rejects.toMatchObject({ code: 'FERRY_PERMISSION_DENIED' });
  });

  it('deletes in batches of 1000 and keeps keys as written (leading slash, dots)', async () => {
    const s = open({ bucket: dst });
    const keys = Array.from({ length: 1003 }, (_, i) => `batch/${String(i).padStart(4, '0')}`);
    keys.push('/batch-leading-slash', 'batch/./dot', 'batch/../up');
    let i = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (i < keys.length) {
          const k = keys[i++]!;
          await s.put(k, Buffer.from(k));
        }
      }),
    );
    expect(server.object(dst, '/batch-leading-slash')).toBeDefined();
    expect((await readAll(await s.get('batch/../up'))).toString()).toBe('batch/../up');
    const before = server.requests.length;
    await s.deleteMany([...keys, 'batch/never-existed']);
    const posts = server.requests.slice(before);
    expect(posts.map((r) => [r.method, 'delete' in r.query])).toEqual([
      ['POST', true],
      ['POST', true],
    ]);
    expect(server.keys(dst).filter((k) => k.includes('batch'))).toEqual([]);
  });

  it('reads the end of an object as empty and checks existence for empty ranges', async () => {
    const s = open({ bucket: src });
    await s.put('ends/ten', Buffer.from('0123456789'));
    await s.put('ends/empty', Buffer.alloc(0));
    expect((await readAll(await s.get('ends/ten', { offset: 10 }))).length).toBe(0);
    expect((await readAll(await s.get('ends/empty', { offset: 0, length: 5 }))).length).toBe(0);
    expect((await readAll(await s.get('ends/ten', { offset: 3, length: 0 }))).length).toBe(0);
    await expect(s.get('ends/missing', { offset: 3, length: 0 })).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
    const r = server.requests.filter((x) => x.key === 'ends/ten' && x.method === 'GET');
    expect(r[0]?.headers['range']).toBe('bytes=10-');
  });

  it('drops the connection when a reader stops early, and keeps working', async () => {
    const s = open({ bucket: src });
    const size = 24 * MiB;
    await s.put('early/obj', patternStream(size, 2), { size });
    const body = await s.get('early/obj');
    for await (const chunk of body) {
      expect((chunk as Buffer).length).toBeGreaterThan(0);
      break;
    }
    expect(body.destroyed).toBe(true);
    expect((await readAll(await s.get('early/obj', { offset: size - 4 }))).length).toBe(4);
  });

  it('fails a read whose body is cut short', async () => {
    const s = open({ bucket: src });
    await s.put('cut/obj', patternStream(32 * MiB, 4), { size: 32 * MiB });
    const body = await s.get('cut/obj');
    // Tear the connection down under the reader, as a network failure would.
    const chunks: Buffer[] = [];
    const read = (async () => {
      for await (const c of body) {
        chunks.push(c as Buffer);
        if (chunks.length === 1) server.dropConnections();
      }
    })();
    await expect(read).rejects.toMatchObject({ code: 'FERRY_TRANSIENT', message: expect.stringContaining('cos GET source-1250000000/cut/obj') });
  });

  it('gives up on a silent server after the timeout', async () => {
    const s = open({ bucket: src, internal: { timeoutMs: 300 } });
    await s.put('silent/k', Buffer.from('k'));
    const before = server.requests.length;
    server.inject('stall', 1);
    await expect(s.head('silent/k')).rejects.toMatchObject({
      code: 'FERRY_TRANSIENT',
      message: `cos HEAD source-1250000000/silent/k: no answer from source-1250000000.cos.ap-beijing.myqcloud.com via ${server.ip} within 0.3 s (ETIMEDOUT)`,
    });
    server.inject('stall', 1);
    await expect(s.get('silent/k')).rejects.toMatchObject({ code: 'FERRY_TRANSIENT' });
    expect(server.requests.length - before).toBe(2);
    expect((await s.head('silent/k')).size).toBe(1);
  });

  it('keeps connections alive between calls', async () => {
    const s = open({ bucket: src });
    await s.put('alive/k', Buffer.from('k'));
    const before = server.connections;
    for (let i = 0; i < 20; i++) await s.head('alive/k');
    for (let i = 0; i < 5; i++) await readAll(await s.get('alive/k'));
    expect(server.connections - before).toBeLessThanOrEqual(1);
  });

  it('interrupts a call when its signal fires', async () => {
    const s = open({ bucket: src, internal: { multipartThreshold: MiB, partSize: MiB } });
    const ac = new AbortController();
    ac.abort();
    await expect(s.head('x', { signal: ac.signal })).rejects.toMatchObject({ code: 'FERRY_ABORTED' });
    const ac2 = new AbortController();
    const slow = new Readable({ read() {} });
    slow.push(Buffer.alloc(1000));
    const p = s.put('abort/k', slow, { size: 10 * MiB, signal: ac2.signal });
    setTimeout(() => ac2.abort(), 50);
    await expect(p).rejects.toMatchObject({ code: 'FERRY_ABORTED' });
    expect(server.pendingUploads).toBe(0);
  });

  it('the test server refuses unsigned and tampered requests with COS XML errors', async () => {
    const send = (headers: Record<string, string>) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: server.port, path: '/x', headers: { host: `${src}.cos.ap-beijing.myqcloud.com`, ...headers } }, (res) => {
          const c: Buffer[] = [];
          res.on('data', (d: Buffer) => c.push(d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(c).toString() }));
        });
        req.on('error', reject);
        req.end();
      });
    const unsigned = await send({});
    expect(unsigned.status).toBe(403);
    expect(unsigned.body).toMatch(/<Error>\s*<Code>AccessDenied<\/Code>/);
    const now = Math.floor(Date.now() / 1000);
    const t = `${now};${now + 600}`;
    const forged = await send({ authorization: `q-sign-algorithm=sha1&q-ak=${AK}&q-sign-time=${t}&q-key-time=${t}&q-header-list=host&q-url-param-list=&q-signature=${'0'.repeat(40)}` });
    expect(forged.status).toBe(403);
    expect(forged.body).toContain('<Code>SignatureDoesNotMatch</Code>');
  });
});
