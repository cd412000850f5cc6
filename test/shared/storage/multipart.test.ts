import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  MiB,
  partRange,
  partSizing,
  runMultipart,
  uploadInParts,
  type MultipartRequests,
  type MultipartUpload,
  type PartData,
  type UploadedPart,
} from '../../../src/shared/storage/multipart.js';
import { patternStream } from './conformance.js';

const S3 = { minPartSize: 5 * MiB, maxPartSize: 5 * 1024 * MiB, maxParts: 10_000 };
const SMALL = { minPartSize: 4, maxPartSize: 1024, maxParts: 100 };

/** A service that keeps uploads in memory and logs every request. */
function fakeService(options: { failPart?: number; delay?: (partNumber: number) => number } = {}) {
  const log: string[] = [];
  const stored = new Map<string, Buffer>();
  const parts = new Map<string, Map<number, Buffer>>();
  let inFlight = 0;
  let maxInFlight = 0;
  let seq = 0;
  const requests: MultipartRequests<PartData> = {
    async create(key) {
      const id = `up${++seq}`;
      parts.set(id, new Map());
      log.push(`create ${key}`);
      return id;
    },
    async uploadPart(upload, n, part, signal) {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      try {
        const chunks: Buffer[] = [];
        if (Buffer.isBuffer(part.body)) chunks.push(part.body);
        else for await (const c of part.body) chunks.push(c as Buffer);
        await new Promise((r) => setTimeout(r, options.delay?.(n) ?? 1));
        signal.throwIfAborted();
        if (n === options.failPart) throw Object.assign(new Error(`part ${n} failed`), { code: 'FERRY_TRANSIENT' });
        parts.get(upload.uploadId)!.set(n, Buffer.concat(chunks));
        log.push(`part ${n}`);
        return `etag${n}`;
      } finally {
        inFlight--;
      }
    },
    async complete(upload, done: UploadedPart[]) {
      log.push(`complete ${done.map((p) => p.partNumber).join(',')}`);
      const mine = parts.get(upload.uploadId)!;
      stored.set(upload.key, Buffer.concat(done.map((p) => mine.get(p.partNumber)!)));
      parts.delete(upload.uploadId);
    },
    async abort(upload) {
      log.push(`abort (${inFlight} in flight)`);
      parts.delete(upload.uploadId);
    },
  };
  return { requests, log, stored, open: () => parts.size, maxInFlight: () => maxInFlight };
}

async function bytes(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('partSizing', () => {
  it("sizes parts from the store's limits and the object's size", () => {
    expect(partSizing(S3, 5 * MiB, 100 * MiB, 'x').partSize).toBe(5 * MiB);
    // 10,000 parts must hold the object: 1 TiB needs parts of 105 MiB (whole MiB).
    expect(partSizing(S3, 5 * MiB, 1024 * 1024 * MiB, 'x').partSize).toBe(105 * MiB);
    // The store's preference counts, within its limits.
    expect(partSizing(S3, 16 * MiB, 100 * MiB, 'x').partSize).toBe(16 * MiB);
    expect(partSizing(S3, 1 * MiB, 100 * MiB, 'x').partSize).toBe(5 * MiB);
    expect(() => partSizing(S3, 5 * MiB, 5 * 1024 * 1024 * MiB * 10, 'put k')).toThrow(expect.objectContaining({ code: 'FERRY_FATAL', message: expect.stringContaining('put k') }));
    // Unknown sizes: the preferred size, doubling every tenth of the part count.
    const unknown = partSizing(S3, 5 * MiB, undefined, 'x');
    expect([unknown.sizeOf(0), unknown.sizeOf(999), unknown.sizeOf(1000), unknown.sizeOf(9999)]).toEqual([5 * MiB, 5 * MiB, 10 * MiB, 2560 * MiB]);
    let reach = 0;
    for (let i = 0; i < S3.maxParts; i++) reach += unknown.sizeOf(i);
    expect(reach).toBeGreaterThan(5e12);
  });
});

describe('runMultipart', () => {
  it('keeps a bounded number of parts in flight and completes with the parts in order', async () => {
    // Later parts finish first.
    const svc = fakeService({ delay: (n) => 40 - n * 3 });
    const data = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz');
    await uploadInParts(svc.requests, 'k', data, { limits: SMALL, partSize: 4, partsInFlight: 3, what: 'put k' });
    expect(svc.maxInFlight()).toBe(3);
    expect(svc.log.at(-1)).toBe('complete 1,2,3,4,5,6,7,8,9');
    expect(svc.stored.get('k')).toEqual(data);
    expect(svc.open()).toBe(0);
  });

  it('keeps its state as plain data, from which any executor can upload a part', async () => {
    const svc = fakeService();
    const upload = await runMultipart(svc.requests, 'k', [{ body: Buffer.from('abcd'), size: 4 }, { body: Buffer.from('ef'), size: 2 }], {
      limits: SMALL,
      partSize: 4,
      size: 6,
      partsInFlight: 2,
      what: 'put k',
      sizeOfPart: (p) => p.size,
    });
    const copy = JSON.parse(JSON.stringify(upload)) as MultipartUpload;
    expect(copy).toEqual(upload);
    expect(copy).toMatchObject({ v: 1, key: 'k', uploadId: 'up1', partSize: 4, size: 6 });
    expect([...copy.parts].sort((a, b) => a.partNumber - b.partNumber)).toEqual([
      { partNumber: 1, etag: 'etag1', size: 4 },
      { partNumber: 2, etag: 'etag2', size: 2 },
    ]);
    expect([partRange(copy, 1), partRange(copy, 2)]).toEqual([
      { first: 0, last: 3 },
      { first: 4, last: 5 },
    ]);
  });

  it('aborts the upload when a part fails, after the parts in flight have settled, and never completes it', async () => {
    const svc = fakeService({ failPart: 2, delay: (n) => (n === 2 ? 1 : 30) });
    const source = patternStream(1000, 1);
    await expect(uploadInParts(svc.requests, 'k', source, { limits: SMALL, partSize: 8, size: 1000, partsInFlight: 3, what: 'put k' })).rejects.toMatchObject({ message: 'part 2 failed' });
    expect(svc.log.filter((l) => l.startsWith('abort'))).toEqual(['abort (0 in flight)']);
    expect(svc.log.some((l) => l.startsWith('complete'))).toBe(false);
    expect(svc.open()).toBe(0);
    // The source was not read to its end.
    expect(svc.log.filter((l) => l.startsWith('part')).length).toBeLessThan(10);
    expect(source.destroyed).toBe(true);
  });

  it('aborts the upload with FERRY_ABORTED when the signal fires, and stops reading the source', async () => {
    const svc = fakeService({ delay: () => 5 });
    const ac = new AbortController();
    let sent = 0;
    const source = new Readable({
      read() {
        sent += 4;
        if (sent === 40) ac.abort();
        if (sent <= 40) this.push(Buffer.alloc(4));
      },
    });
    await expect(uploadInParts(svc.requests, 'k', source, { limits: SMALL, partSize: 4, partsInFlight: 2, signal: ac.signal, what: 'put k' })).rejects.toMatchObject({
      code: 'FERRY_ABORTED',
      message: 'put k: interrupted',
    });
    expect(svc.log.at(-1)).toMatch(/^abort/);
    expect(svc.open()).toBe(0);
    expect(source.destroyed).toBe(true);
  });

  it('refuses a body shorter or longer than its declared size before completing, and aborts', async () => {
    for (const [got, size] of [
      [99, 100],
      [101, 100],
    ] as const) {
      const svc = fakeService();
      await expect(uploadInParts(svc.requests, 'k', patternStream(got, 2), { limits: SMALL, partSize: 8, size, partsInFlight: 2, what: 'put k' })).rejects.toMatchObject({ code: 'FERRY_SOURCE_CHANGED' });
      expect(svc.log.some((l) => l.startsWith('complete'))).toBe(false);
      expect(svc.open()).toBe(0);
      expect(svc.stored.size).toBe(0);
    }
    const svc = fakeService();
    await expect(uploadInParts(svc.requests, 'k', Buffer.alloc(10), { limits: SMALL, partSize: 4, size: 11, partsInFlight: 2, what: 'put k' })).rejects.toMatchObject({ code: 'FERRY_SOURCE_CHANGED' });
    expect(svc.log).toEqual([]);
  });

  it('stores a stream of unknown size that ends within its first part in one request', async () => {
    for (const data of [Buffer.alloc(0), Buffer.from('abc')]) {
      const svc = fakeService();
      const single: Buffer[] = [];
      await uploadInParts(svc.requests, 'k', Readable.from(data.length ? [data] : []), {
        limits: SMALL,
        partSize: 4,
        partsInFlight: 2,
        what: 'put k',
        single: async (d) => void single.push(d),
      });
      expect(single).toEqual([data]);
      expect(svc.log).toEqual([]);
    }
    const svc = fakeService();
    await uploadInParts(svc.requests, 'k', Readable.from([Buffer.from('abcdefghij')]), { limits: SMALL, partSize: 4, partsInFlight: 2, what: 'put k', single: () => Promise.reject(new Error('not single')) });
    expect(svc.stored.get('k')?.toString()).toBe('abcdefghij');
    expect(await bytes(Readable.from([svc.stored.get('k')!]))).toHaveLength(10);
  });
});
