/**
 * The backend conformance suite. Every backend's test file starts its server and calls
 * `describeConformance`; a capability the store does not declare skips the tests that need it.
 */
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareKeys } from '../../../src/shared/storage/keys.js';
import { isTempName } from '../../../src/shared/storage/temp.js';
import type { Entry, ObjectStore } from '../../../src/shared/storage/types.js';

export type Fault = 'throttle' | 'error' | 'drop';

export interface ConformanceTarget {
  /** An empty store (a fresh bucket or directory). */
  store: ObjectStore;
  /** Stop servers, remove temporary directories. */
  cleanup?(): Promise<void>;
  /** Longest key and longest path segment, in UTF-8 bytes (defaults 1024 and 255). */
  maxKeyBytes?: number;
  maxNameBytes?: number;
  /** Keys may contain empty segments ('a//b'); false for directory trees. */
  emptySegments?: boolean;
  /** Size of the large-object test (default 100 MiB). */
  bigObjectBytes?: number;
  /** Make the server fail the next `count` requests: 503 SlowDown, 500, or a dropped connection. */
  inject?(fault: Fault, count: number): void;
  /** The same store opened with credentials the server refuses. */
  openWithBadCredentials?(): Promise<ObjectStore>;
  /**
   * A body size that goes up in parts (features.multipart); default `bigObjectBytes` where the store
   * has multipart, else 8 MiB (past every store's whole-body path).
   */
  multipartBytes?: number;
  /** Make the server answer the next request that uploads a part with 500 InternalError. */
  failNextPart?(): void;
  /** Multipart uploads started and neither completed nor aborted. */
  pendingUploads?(): Promise<number>;
  /** Temporaries (temp.ts) anywhere under the store's root, where a tree store writes before renaming. */
  temporaries?(): Promise<string[]>;
  /** The same root opened to write in place (`--inplace`, features.inplace). */
  openInplace?(): Promise<ObjectStore>;
}

/** Deterministic bytes: the same (size, seed) always gives the same stream. */
export function patternStream(size: number, seed = 1): Readable {
  const chunk = 1 << 20;
  let sent = 0;
  const block = Buffer.alloc(chunk);
  return new Readable({
    read() {
      if (sent >= size) return void this.push(null);
      const n = Math.min(chunk, size - sent);
      let x = (seed * 2654435761 + sent) >>> 0;
      for (let i = 0; i < n; i += 4) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        block.writeUInt32LE(x >>> 0, i);
      }
      sent += n;
      this.push(Buffer.from(block.subarray(0, n)));
    },
  });
}

export async function sha256(stream: AsyncIterable<Buffer | Uint8Array>): Promise<{ hex: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const c of stream) {
    h.update(c);
    size += c.length;
  }
  return { hex: h.digest('hex'), size };
}

/** The temporaries (temp.ts) under a directory of this machine: `temporaries` of stores whose root is local. */
export async function localTemporaries(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).filter((p) => isTempName(basename(p)));
}

export async function readAll(stream: AsyncIterable<Buffer | Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

export async function listAll(store: ObjectStore, options: Parameters<ObjectStore['list']>[0] = {}): Promise<Entry[]> {
  const out: Entry[] = [];
  for await (const page of store.list(options)) out.push(...page);
  return out;
}

async function pool<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (i < items.length) await fn(items[i++]!);
    }),
  );
}

async function rejectsWithCode(p: Promise<unknown>, code: string): Promise<void> {
  await expect(p).rejects.toMatchObject({ code });
}

/**
 * A body that gives `bytes` bytes of pattern, then asks `onStall` once and gives nothing more (a
 * source that hangs): a store must not wait for it once its signal fires.
 */
function stallingBody(bytes: number, onStall: () => void): Readable {
  let sent = 0;
  let stalled = false;
  return new Readable({
    read() {
      if (sent < bytes) {
        const n = Math.min(64 * 1024, bytes - sent);
        sent += n;
        this.push(Buffer.alloc(n, sent & 0xff));
      } else if (!stalled) {
        stalled = true;
        onStall();
      }
    },
  });
}

export function describeConformance(name: string, setup: () => Promise<ConformanceTarget>): void {
  describe(`${name} conformance`, () => {
    let t: ConformanceTarget;
    let s: ObjectStore;
    beforeAll(async () => {
      t = await setup();
      s = t.store;
    }, 120_000);
    afterAll(async () => {
      await s?.close?.();
      await t?.cleanup?.();
    });

    it('puts, heads and gets an object', async () => {
      await s.put('basic/hello.txt', Buffer.from('hello, ferry'), { size: 12 });
      const e = await s.head('basic/hello.txt');
      expect(e).toMatchObject({ key: 'basic/hello.txt', size: 12, isDir: false });
      expect(e.mtime).toBeGreaterThan(Date.now() - 3600_000);
      expect((await readAll(await s.get('basic/hello.txt'))).toString()).toBe('hello, ferry');
      // A stream body, overwriting.
      await s.put('basic/hello.txt', Readable.from([Buffer.from('bye')]), { size: 3 });
      expect((await readAll(await s.get('basic/hello.txt'))).toString()).toBe('bye');
    });

    it('keeps empty objects', async () => {
      await s.put('empty/zero', Buffer.alloc(0), { size: 0 });
      expect((await s.head('empty/zero')).size).toBe(0);
      expect((await readAll(await s.get('empty/zero'))).length).toBe(0);
      const listed = await listAll(s, { prefix: 'empty/' });
      expect(listed.map((e) => [e.key, e.size])).toEqual([['empty/zero', 0]]);
    });

    it('reads ranges', async () => {
      const data = Buffer.from('0123456789abcdefghij');
      await s.put('range/obj', data, { size: data.length });
      expect((await readAll(await s.get('range/obj', { offset: 5, length: 4 }))).toString()).toBe('5678');
      expect((await readAll(await s.get('range/obj', { offset: 15 }))).toString()).toBe('fghij');
      expect((await readAll(await s.get('range/obj', { offset: 0, length: 1 }))).toString()).toBe('0');
      expect((await readAll(await s.get('range/obj', { offset: 18, length: 100 }))).toString()).toBe('ij');
    });

    it('maps missing keys to FERRY_NOT_FOUND and deletes idempotently', async () => {
      await rejectsWithCode(s.head('missing/nothing-here'), 'FERRY_NOT_FOUND');
      await rejectsWithCode(s.get('missing/nothing-here').then(readAll), 'FERRY_NOT_FOUND');
      await s.delete('missing/nothing-here');
      await s.put('missing/gone', Buffer.from('x'), { size: 1 });
      await s.delete('missing/gone');
      await rejectsWithCode(s.head('missing/gone'), 'FERRY_NOT_FOUND');
      expect((await listAll(s, { prefix: 'missing/' })).filter((e) => !e.isDir)).toEqual([]);
    });

    it('lists across pages in UTF-8 byte order, with startAfter', async () => {
      const keys: string[] = [];
      for (let i = 0; i < 1205; i++) keys.push(`order/k${String(i).padStart(4, '0')}`);
      // Names where UTF-16 order and UTF-8 order disagree, and 'a-b' before 'a/' (S3's order).
      keys.push('order/a-b', 'order/a/x', 'order/a0', 'order/\u{1F600}smile', 'order/\uFF5Efullwidth', 'order/\u00e9', 'order/Z');
      await pool(keys, 16, (k) => s.put(k, Buffer.from(k), { size: Buffer.byteLength(k) }));
      const listed = await listAll(s, { prefix: 'order/' });
      for (let i = 1; i < listed.length; i++) {
        expect(compareKeys(listed[i - 1]!.key, listed[i]!.key), `${listed[i - 1]!.key} before ${listed[i]!.key}`).toBeLessThan(0);
      }
      const files = listed.filter((e) => !e.isDir).map((e) => e.key);
      expect(files).toEqual([...keys].sort(compareKeys));
      const sizes = new Map(listed.map((e) => [e.key, e.size]));
      expect(sizes.get('order/k0042')).toBe(Buffer.byteLength('order/k0042'));

      const after = (await listAll(s, { prefix: 'order/', startAfter: 'order/k0600' })).filter((e) => !e.isDir).map((e) => e.key);
      expect(after[0]).toBe('order/k0601');
      expect(after).toEqual(files.filter((k) => compareKeys(k, 'order/k0600') > 0));
      const astral = (await listAll(s, { prefix: 'order/', startAfter: 'order/\uFF5Efullwidth' })).map((e) => e.key);
      expect(astral).toEqual(['order/\u{1F600}smile']);
    });

    it('lists one level with a delimiter', async () => {
      for (const k of ['delim/a', 'delim/b/c', 'delim/b/d', 'delim/e/f/g', 'delim/e-f']) await s.put(k, Buffer.from('1'), { size: 1 });
      const listed = await listAll(s, { prefix: 'delim/', delimiter: '/' });
      expect(listed.map((e) => [e.key, e.isDir])).toEqual([
        ['delim/a', false],
        ['delim/b/', true],
        ['delim/e-f', false],
        ['delim/e/', true],
      ]);
    });

    it('treats a prefix as a key prefix, not a directory', async () => {
      for (const k of ['pfx/test/1', 'pfx/text/2', 'pfx/tx', 'pfx/te']) await s.put(k, Buffer.from(k), { size: Buffer.byteLength(k) });
      const files = (await listAll(s, { prefix: 'pfx/te' })).filter((e) => !e.isDir).map((e) => e.key);
      expect(files).toEqual(['pfx/te', 'pfx/test/1', 'pfx/text/2']);
      const dir = (await listAll(s, { prefix: 'pfx/test/' })).filter((e) => !e.isDir).map((e) => e.key);
      expect(dir).toEqual(['pfx/test/1']);
    });

    it('keeps awkward names byte for byte, NFC and NFD apart', async () => {
      const names = ['with space', '100%', '%41', 'a+b', 'hash#tag', 'what?', 'amp&eq=', 'tilde~', '日本語', 'emoji😀', 'caf\u00e9', 'cafe\u0301', "quote'\"", 'semi;colon'];
      const keys = names.map((n) => `awk/${n}`);
      if (t.emptySegments !== false) keys.push('awk/double//slash');
      for (const k of keys) await s.put(k, Buffer.from(k), { size: Buffer.byteLength(k) });
      const listed = (await listAll(s, { prefix: 'awk/' })).filter((e) => !e.isDir).map((e) => e.key);
      expect(listed).toEqual([...keys].sort(compareKeys));
      for (const k of keys) {
        expect((await s.head(k)).size, k).toBe(Buffer.byteLength(k));
        expect((await readAll(await s.get(k))).toString(), k).toBe(k);
      }
    });

    it('holds keys near the length limits', async () => {
      const maxName = t.maxNameBytes ?? 255;
      const maxKey = t.maxKeyBytes ?? 1024;
      const longName = 'long/' + 'n'.repeat(maxName - 1) + 'é'.slice(0, 0) + 'x';
      const segments: string[] = ['long2'];
      let len = 'long2'.length;
      while (len + 1 + maxName <= maxKey - 20) {
        segments.push('s'.repeat(Math.min(maxName, 200)));
        len += 1 + Math.min(maxName, 200);
      }
      const longKey = segments.join('/') + '/' + 'k'.repeat(Math.min(maxName, maxKey - len - 1));
      expect(Buffer.byteLength(longKey)).toBeLessThanOrEqual(maxKey);
      for (const k of [longName, longKey]) {
        await s.put(k, Buffer.from('L'), { size: 1 });
        expect((await s.head(k)).size).toBe(1);
      }
      const listed = (await listAll(s, { prefix: 'long' })).filter((e) => !e.isDir).map((e) => e.key);
      expect(listed).toEqual([longName, longKey].sort(compareKeys));
    });

    it('stores a large object (multipart where the store has it) and reads ranges across parts', async () => {
      const size = t.bigObjectBytes ?? 100 * 1024 * 1024;
      const expected = await sha256(patternStream(size, 7));
      await s.put('big/object.bin', patternStream(size, 7), { size });
      expect((await s.head('big/object.bin')).size).toBe(size);
      const got = await sha256(await s.get('big/object.bin'));
      expect(got).toEqual(expected);
      const whole = patternStream(size, 7);
      const off = Math.floor(size / 2) - 10;
      let pos = 0;
      let want = Buffer.alloc(0);
      for await (const c of whole as AsyncIterable<Buffer>) {
        if (pos + c.length > off && want.length < 64) want = Buffer.concat([want, c.subarray(Math.max(0, off - pos))]);
        pos += c.length;
        if (want.length >= 64) break;
      }
      whole.destroy();
      expect(await readAll(await s.get('big/object.bin', { offset: off, length: 64 }))).toEqual(want.subarray(0, 64));
    }, 300_000);

    it.runIf(() => true)('lists what was deleted no more', async () => {
      await s.put('del/a', Buffer.from('a'), { size: 1 });
      await s.put('del/b', Buffer.from('b'), { size: 1 });
      if (s.deleteMany) await s.deleteMany(['del/a', 'del/b']);
      else {
        await s.delete('del/a');
        await s.delete('del/b');
      }
      expect((await listAll(s, { prefix: 'del/' })).filter((e) => !e.isDir)).toEqual([]);
    });

    /** What a failed or interrupted put may not leave: temporaries of tree stores, open multipart uploads. */
    async function nothingLeftOver(): Promise<void> {
      if (t.temporaries) expect(await t.temporaries()).toEqual([]);
      if (t.pendingUploads) expect(await t.pendingUploads()).toBe(0);
    }

    function multipartSize(): number {
      return t.multipartBytes ?? (s.features.multipart ? (t.bigObjectBytes ?? 100 * 1024 * 1024) : 8 * 1024 * 1024);
    }

    describe('contract', () => {
      it('refuses to delete a directory that holds entries with FERRY_NOT_EMPTY (features.dirs)', async (ctx) => {
        // Regression: HDFS and SFTP failed such a delete as FERRY_FATAL, and only the file store's error carried ENOTEMPTY, as a cause.
        if (!s.features.dirs || !s.mkdir) return ctx.skip();
        await s.put('notempty/d/f', Buffer.from('kept'), { size: 4 });
        await s.mkdir('notempty/e/sub/');
        await rejectsWithCode(s.delete('notempty/d/'), 'FERRY_NOT_EMPTY');
        await rejectsWithCode(s.delete('notempty/e/'), 'FERRY_NOT_EMPTY');
        expect((await readAll(await s.get('notempty/d/f'))).toString()).toBe('kept');
        expect((await s.head('notempty/e/sub/')).isDir).toBe(true);
        // Emptied, it goes.
        await s.delete('notempty/d/f');
        await s.delete('notempty/d/');
        await rejectsWithCode(s.head('notempty/d/'), 'FERRY_NOT_FOUND');
        expect((await listAll(s, { prefix: 'notempty/' })).map((e) => e.key)).toEqual(['notempty/e/', 'notempty/e/sub/']);
      });

      it('deletes only the marker key of a directory where directories are not real', async (ctx) => {
        if (s.features.dirs) return ctx.skip();
        await s.put('markers/d/', Buffer.alloc(0), { size: 0 });
        await s.put('markers/d/f', Buffer.from('kept'), { size: 4 });
        await s.delete('markers/d/');
        await rejectsWithCode(s.head('markers/d/'), 'FERRY_NOT_FOUND');
        expect((await readAll(await s.get('markers/d/f'))).toString()).toBe('kept');
        expect((await listAll(s, { prefix: 'markers/' })).map((e) => e.key)).toEqual(['markers/d/f']);
      });

      it('answers FERRY_ABORTED to list, get and put when the signal has fired already, and changes nothing', async () => {
        // Regression: each store answered an aborted signal its own way (Node's AbortError, the signal's DOMException, FERRY_FATAL), and the file and mem stores wrote a buffer anyway.
        await s.put('aborted/old', Buffer.from('old'), { size: 3 });
        const aborted = AbortSignal.abort();
        await rejectsWithCode(listAll(s, { prefix: 'aborted/', signal: aborted }), 'FERRY_ABORTED');
        await rejectsWithCode(
          s.get('aborted/old', { signal: aborted }).then((b) => readAll(b)),
          'FERRY_ABORTED',
        );
        await rejectsWithCode(s.put('aborted/old', Buffer.from('new'), { size: 3, signal: aborted }), 'FERRY_ABORTED');
        await rejectsWithCode(s.put('aborted/new', Readable.from([Buffer.from('new')]), { size: 3, signal: aborted }), 'FERRY_ABORTED');
        expect((await readAll(await s.get('aborted/old'))).toString()).toBe('old');
        await rejectsWithCode(s.head('aborted/new'), 'FERRY_NOT_FOUND');
        await nothingLeftOver();
      });

      it('stops a listing with FERRY_ABORTED when the signal fires while a page is read, or between pages', async () => {
        // Regression: tree stores went on yielding the pages of a large directory after the signal fired, and others stopped with a DOMException.
        const keys = Array.from({ length: 1001 }, (_, i) => `abortlist/k${String(i).padStart(4, '0')}`);
        await pool(keys, 16, (k) => s.put(k, Buffer.alloc(0), { size: 0 }));
        const during = new AbortController();
        const first = s.list({ prefix: 'abortlist/', signal: during.signal })[Symbol.asyncIterator]();
        const page = first.next();
        during.abort();
        await rejectsWithCode(page, 'FERRY_ABORTED');

        const between = new AbortController();
        const it = s.list({ prefix: 'abortlist/', signal: between.signal })[Symbol.asyncIterator]();
        const one = await it.next();
        expect(one.done).toBe(false);
        expect((one.value as Entry[]).length).toBeLessThan(keys.length);
        between.abort();
        await rejectsWithCode(it.next(), 'FERRY_ABORTED');
      });

      it('stops a read with FERRY_ABORTED when the signal fires during the call or while the body streams', async () => {
        // Regression: the file and mem stores ignored the signal of a read, and SFTP and OSS ended it with Node's AbortError.
        const size = 8 * 1024 * 1024;
        await s.put('abortget/obj', patternStream(size, 5), { size });
        const early = new AbortController();
        const call = s.get('abortget/obj', { signal: early.signal });
        early.abort();
        await rejectsWithCode(
          call.then((b) => readAll(b)),
          'FERRY_ABORTED',
        );

        const late = new AbortController();
        const body = await s.get('abortget/obj', { signal: late.signal });
        const chunks = body[Symbol.asyncIterator]();
        expect((await chunks.next()).done).toBe(false);
        late.abort();
        let read = 0;
        const drained = (async () => {
          for (let r = await chunks.next(); !r.done; r = await chunks.next()) read += (r.value as Buffer).length;
        })();
        await rejectsWithCode(drained, 'FERRY_ABORTED');
        expect(read).toBeLessThan(size);
      });

      it('stops a put with FERRY_ABORTED when the signal fires mid-body, leaving the key as it was', async () => {
        // Regression: the file, mem, OSS and SFTP stores waited for ever on a stalled source after the signal fired.
        await s.put('abortput/old', Buffer.from('old'), { size: 3 });
        for (const [size, sent] of [
          [64 * 1024, 16 * 1024],
          [multipartSize(), Math.floor(multipartSize() / 2)],
        ] as const) {
          for (const key of ['abortput/old', 'abortput/new']) {
            const ac = new AbortController();
            const put = s.put(key, stallingBody(sent, () => ac.abort()), { size, signal: ac.signal });
            await rejectsWithCode(put, 'FERRY_ABORTED');
          }
          expect((await readAll(await s.get('abortput/old'))).toString()).toBe('old');
          await rejectsWithCode(s.head('abortput/new'), 'FERRY_NOT_FOUND');
          await nothingLeftOver();
        }
      }, 120_000);

      it('refuses a body shorter or longer than its declared size with FERRY_SOURCE_CHANGED, storing nothing', async () => {
        // Regression: the file, mem and SFTP stores stored whatever length came, and S3, COS and HDFS took a buffer's length over the size it was announced with.
        await s.put('size/old', Buffer.from('old'), { size: 3 });
        const cases: [string, () => Buffer | Readable, number][] = [
          ['size/buffer-short', () => Buffer.alloc(10, 1), 11],
          ['size/buffer-long', () => Buffer.alloc(12, 1), 11],
          ['size/short', () => patternStream(1000, 2), 2000],
          ['size/long', () => patternStream(3000, 2), 2000],
          ['size/empty-long', () => Readable.from([Buffer.from('x')]), 0],
          ['size/old', () => Readable.from([Buffer.from('newer')]), 6],
          ['size/old', () => Buffer.from('newer'), 4],
        ];
        for (const [key, body, size] of cases) await rejectsWithCode(s.put(key, body(), { size }), 'FERRY_SOURCE_CHANGED');
        for (const [key] of cases) if (key !== 'size/old') await rejectsWithCode(s.head(key), 'FERRY_NOT_FOUND');
        expect((await readAll(await s.get('size/old'))).toString()).toBe('old');
        await nothingLeftOver();
      });

      it('refuses a large (multipart-sized) body shorter or longer than its declared size, storing nothing', async () => {
        const size = multipartSize();
        await rejectsWithCode(s.put('size/large-short', patternStream(size - 1, 3), { size }), 'FERRY_SOURCE_CHANGED');
        await rejectsWithCode(s.put('size/large-long', patternStream(size + 1, 3), { size }), 'FERRY_SOURCE_CHANGED');
        for (const key of ['size/large-short', 'size/large-long']) await rejectsWithCode(s.head(key), 'FERRY_NOT_FOUND');
        await nothingLeftOver();
      }, 120_000);

      it('aborts a multipart upload whose part fails, storing nothing (features.multipart)', async (ctx) => {
        if (!s.features.multipart || !t.failNextPart || !t.pendingUploads) return ctx.skip();
        const size = multipartSize();
        t.failNextPart();
        await rejectsWithCode(s.put('mpfail/obj', patternStream(size, 4), { size }), 'FERRY_TRANSIENT');
        await rejectsWithCode(s.head('mpfail/obj'), 'FERRY_NOT_FOUND');
        expect(await t.pendingUploads()).toBe(0);
        // The same upload then goes through, its parts in order.
        await s.put('mpfail/obj', patternStream(size, 4), { size });
        expect(await sha256(await s.get('mpfail/obj'))).toEqual(await sha256(patternStream(size, 4)));
        expect(await t.pendingUploads()).toBe(0);
      }, 120_000);
    });

    describe('multipart uploads (store.multipart)', () => {
      /** A part size within the store's limits, and an object of two full parts and a short last one. */
      function sizes(): { partSize: number; size: number } {
        const partSize = s.features.multipart!.minPartSize;
        return { partSize, size: 2 * partSize + 1000 };
      }
      const range = (data: Buffer, partSize: number, n: number): Buffer => data.subarray((n - 1) * partSize, Math.min(data.length, n * partSize));

      it('completes parts uploaded out of order, by separate calls, from buffers and streams, to the right bytes', async (ctx) => {
        if (!s.multipart) return ctx.skip();
        const mp = s.multipart;
        const { partSize, size } = sizes();
        const data = await readAll(patternStream(size, 9));
        const up = await mp.start('mp/obj', size, { partSize });
        expect(up).toMatchObject({ v: 1, key: 'mp/obj', partSize, size });
        // Nothing is there until the upload completes.
        await rejectsWithCode(s.head('mp/obj'), 'FERRY_NOT_FOUND');
        // Each call gets only what names the upload, as an executor in another process would.
        const ref = JSON.parse(JSON.stringify({ key: up.key, uploadId: up.uploadId })) as { key: string; uploadId: string };
        const p3 = await mp.uploadPart(ref, 3, { body: range(data, partSize, 3), size: size - 2 * partSize });
        const p2 = await mp.uploadPart(ref, 2, { body: Readable.from([range(data, partSize, 2)]), size: partSize });
        // Part 1 first with wrong bytes, then again with the right ones: the latest upload wins.
        await mp.uploadPart(ref, 1, { body: Buffer.alloc(partSize, 1), size: partSize });
        const p1 = await mp.uploadPart(ref, 1, { body: patternStream(partSize, 9), size: partSize });
        expect([p1, p2, p3].map((p) => [p.partNumber, p.size])).toEqual([[1, partSize], [2, partSize], [3, size - 2 * partSize]]);
        await mp.complete(ref, [p3, p1, p2]);
        expect((await s.head('mp/obj')).size).toBe(size);
        expect(await sha256(await s.get('mp/obj'))).toEqual(await sha256(Readable.from([data])));
        await nothingLeftOver();
      }, 120_000);

      it('aborts: the parts and the upload are gone, the key untouched; aborting again is no error', async (ctx) => {
        if (!s.multipart) return ctx.skip();
        const mp = s.multipart;
        const { partSize, size } = sizes();
        await s.put('mp/kept', Buffer.from('old'), { size: 3 });
        const up = await mp.start('mp/kept', size, { partSize });
        await mp.uploadPart(up, 1, { body: Buffer.alloc(partSize, 2), size: partSize });
        if (t.pendingUploads) expect(await t.pendingUploads()).toBe(1);
        await mp.abort(up);
        await mp.abort(up);
        await nothingLeftOver();
        expect((await readAll(await s.get('mp/kept'))).toString()).toBe('old');
        // A part that comes after the abort has no upload to go to.
        await rejectsWithCode(mp.uploadPart(up, 2, { body: Buffer.alloc(partSize, 3), size: partSize }), 'FERRY_NOT_FOUND');
        await nothingLeftOver();
      }, 120_000);

      it('fails a stream part shorter or longer than its size with FERRY_SOURCE_CHANGED; the upload goes on', async (ctx) => {
        // Regression guard: a part cut short by a source that shrank must never be completed into the object.
        if (!s.multipart) return ctx.skip();
        const mp = s.multipart;
        const { partSize } = sizes();
        const size = partSize + 10;
        const up = await mp.start('mp/short', size, { partSize });
        await rejectsWithCode(mp.uploadPart(up, 1, { body: patternStream(partSize - 1, 4), size: partSize }), 'FERRY_SOURCE_CHANGED');
        await rejectsWithCode(mp.uploadPart(up, 1, { body: patternStream(partSize + 1, 4), size: partSize }), 'FERRY_SOURCE_CHANGED');
        await rejectsWithCode(mp.uploadPart(up, 2, { body: Buffer.alloc(9), size: 10 }), 'FERRY_SOURCE_CHANGED');
        const data = await readAll(patternStream(size, 4));
        const parts = [await mp.uploadPart(up, 1, { body: patternStream(partSize, 4), size: partSize }), await mp.uploadPart(up, 2, { body: data.subarray(partSize), size: 10 })];
        await mp.complete(up, parts);
        expect((await readAll(await s.get('mp/short'))).equals(data)).toBe(true);
        await nothingLeftOver();
      }, 120_000);

      it('refuses parts outside its limits before anything is sent, and an aborted signal with FERRY_ABORTED', async (ctx) => {
        if (!s.multipart) return ctx.skip();
        const mp = s.multipart;
        const limits = s.features.multipart!;
        if (limits.minPartSize > 1) await rejectsWithCode(mp.start('mp/limits', limits.minPartSize * 2, { partSize: limits.minPartSize - 1 }), 'FERRY_FATAL');
        await rejectsWithCode(mp.start('mp/limits', limits.maxPartSize * (limits.maxParts + 1), { partSize: limits.maxPartSize }), 'FERRY_FATAL');
        await rejectsWithCode(mp.start('mp/limits', limits.minPartSize * 2, { partSize: limits.minPartSize, signal: AbortSignal.abort() }), 'FERRY_ABORTED');
        await nothingLeftOver();
        const up = await mp.start('mp/limits', limits.minPartSize * 2, { partSize: limits.minPartSize });
        await rejectsWithCode(mp.uploadPart(up, 1, { body: Buffer.alloc(limits.minPartSize), size: limits.minPartSize }, { signal: AbortSignal.abort() }), 'FERRY_ABORTED');
        await rejectsWithCode(mp.uploadPart(up, limits.maxParts + 1, { body: Buffer.alloc(1), size: 1 }), 'FERRY_FATAL');
        await mp.abort(up);
        await nothingLeftOver();
        await rejectsWithCode(s.head('mp/limits'), 'FERRY_NOT_FOUND');
      });
    });

    describe('conditional create (features.exclusiveCreate)', () => {
      it('stores an absent key, and refuses an existing one with FERRY_ALREADY_EXISTS, its content intact', async (ctx) => {
        if (!s.features.exclusiveCreate) return ctx.skip();
        await s.put('excl/one', Buffer.from('first'), { size: 5, ifAbsent: true });
        expect((await readAll(await s.get('excl/one'))).toString()).toBe('first');
        await rejectsWithCode(s.put('excl/one', Buffer.from('second'), { size: 6, ifAbsent: true }), 'FERRY_ALREADY_EXISTS');
        await rejectsWithCode(s.put('excl/one', Readable.from([Buffer.from('third')]), { size: 5, ifAbsent: true }), 'FERRY_ALREADY_EXISTS');
        await rejectsWithCode(s.put('excl/one', Buffer.alloc(0), { size: 0, ifAbsent: true }), 'FERRY_ALREADY_EXISTS');
        expect((await readAll(await s.get('excl/one'))).toString()).toBe('first');
        // A stream body and an empty one create as well; without ifAbsent a put still overwrites.
        await s.put('excl/stream', Readable.from([Buffer.from('streamed')]), { size: 8, ifAbsent: true });
        await s.put('excl/empty', Buffer.alloc(0), { size: 0, ifAbsent: true });
        expect((await readAll(await s.get('excl/stream'))).toString()).toBe('streamed');
        expect((await s.head('excl/empty')).size).toBe(0);
        await s.put('excl/one', Buffer.from('over'), { size: 4 });
        expect((await readAll(await s.get('excl/one'))).toString()).toBe('over');
        // A key deleted is absent again.
        await s.delete('excl/one');
        await s.put('excl/one', Buffer.from('again'), { size: 5, ifAbsent: true });
        expect((await readAll(await s.get('excl/one'))).toString()).toBe('again');
        await nothingLeftOver();
      });

      it('lets exactly one of several concurrent creates of a key win; the key holds the winner\'s bytes', async (ctx) => {
        // Two managers replicating one SRC claim a backup interval this way: both winning would write the backup twice.
        if (!s.features.exclusiveCreate) return ctx.skip();
        for (let round = 0; round < 3; round++) {
          const key = `excl/race-${round}`;
          const bodies = Array.from({ length: 8 }, (_, i) => Buffer.from(`claim by manager ${i} in round ${round}`));
          const results = await Promise.allSettled(
            bodies.map((b, i) => s.put(key, i % 2 ? Readable.from([b]) : b, { size: b.length, ifAbsent: true })),
          );
          const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
          expect(won).toHaveLength(1);
          for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'FERRY_ALREADY_EXISTS' });
          expect((await readAll(await s.get(key))).equals(bodies[won[0]!]!)).toBe(true);
        }
        await nothingLeftOver();
      });

      it('creates a multipart-sized body only where absent, and lets one of two racing ones win', async (ctx) => {
        if (!s.features.exclusiveCreate) return ctx.skip();
        const size = multipartSize();
        await s.put('excl/big', Buffer.from('small claim'), { size: 11 });
        await rejectsWithCode(s.put('excl/big', patternStream(size, 6), { size, ifAbsent: true }), 'FERRY_ALREADY_EXISTS');
        expect((await readAll(await s.get('excl/big'))).toString()).toBe('small claim');
        await nothingLeftOver();
        const results = await Promise.allSettled([1, 2].map((seed) => s.put('excl/big-race', patternStream(size, seed), { size, ifAbsent: true })));
        const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i + 1] : []));
        expect(won).toHaveLength(1);
        for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'FERRY_ALREADY_EXISTS' });
        expect(await sha256(await s.get('excl/big-race'))).toEqual(await sha256(patternStream(size, won[0]!)));
        await nothingLeftOver();
      }, 300_000);

      it('never replaces a directory or a symlink at the key, and creates whole with --inplace too', async (ctx) => {
        // Written in place, a claim would be visible half-written, and two writers could both open the file.
        if (!s.features.exclusiveCreate || (!s.features.dirs && !s.features.symlinks && !t.openInplace)) return ctx.skip();
        if (s.features.dirs && s.mkdir) {
          await s.mkdir('excltree/dir/');
          await rejectsWithCode(s.put('excltree/dir', Buffer.from('x'), { size: 1, ifAbsent: true }), 'FERRY_ALREADY_EXISTS');
          expect((await s.head('excltree/dir/')).isDir).toBe(true);
        }
        if (s.features.symlinks && s.symlink) {
          await s.symlink('excltree/link', '../elsewhere');
          await rejectsWithCode(s.put('excltree/link', Buffer.from('x'), { size: 1, ifAbsent: true }), 'FERRY_ALREADY_EXISTS');
          expect(await s.head('excltree/link')).toMatchObject({ isSymlink: true, target: '../elsewhere' });
        }
        if (t.openInplace && s.features.inplace) {
          const inplace = await t.openInplace();
          try {
            await inplace.put('excltree/inplace', Buffer.from('first'), { size: 5, ifAbsent: true });
            await rejectsWithCode(inplace.put('excltree/inplace', Buffer.from('second'), { size: 6, ifAbsent: true }), 'FERRY_ALREADY_EXISTS');
            expect((await readAll(await s.get('excltree/inplace'))).toString()).toBe('first');
            const bodies = Array.from({ length: 4 }, (_, i) => Buffer.from(`in place claim ${i}`));
            const results = await Promise.allSettled(bodies.map((b) => inplace.put('excltree/inplace-race', b, { size: b.length, ifAbsent: true })));
            const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
            expect(won).toHaveLength(1);
            for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'FERRY_ALREADY_EXISTS' });
            expect((await readAll(await s.get('excltree/inplace-race'))).equals(bodies[won[0]!]!)).toBe(true);
          } finally {
            await inplace.close?.();
          }
        }
        await nothingLeftOver();
      });
    });

    describe('optional capabilities', () => {
      it('keeps mtime and mode (features.attrs)', async (ctx) => {
        if (!s.features.attrs || !s.setAttrs) return ctx.skip();
        await s.put('attrs/f', Buffer.from('x'), { size: 1 });
        const mtime = Date.UTC(2020, 0, 2, 3, 4, 5);
        await s.setAttrs('attrs/f', { mtime, ...(s.features.attrs.mode ? { mode: 0o600 } : {}) });
        const e = await s.head('attrs/f');
        expect(Math.floor(e.mtime / 1000)).toBe(mtime / 1000);
        if (s.features.attrs.mode) expect(e.mode! & 0o777).toBe(0o600);
        const listed = await listAll(s, { prefix: 'attrs/' });
        expect(Math.floor(listed[0]!.mtime / 1000)).toBe(mtime / 1000);
        // put() with mtime sets it too.
        await s.put('attrs/g', Buffer.from('y'), { size: 1, mtime });
        expect(Math.floor((await s.head('attrs/g')).mtime / 1000)).toBe(mtime / 1000);
      });

      it('makes and lists symlinks (features.symlinks)', async (ctx) => {
        if (!s.features.symlinks || !s.symlink) return ctx.skip();
        await s.symlink('links/l1', '../some/target');
        const e = await s.head('links/l1');
        expect(e).toMatchObject({ isSymlink: true, target: '../some/target' });
        const listed = await listAll(s, { prefix: 'links/' });
        expect(listed.map((x) => [x.key, x.isSymlink, x.target])).toEqual([['links/l1', true, '../some/target']]);
      });

      it('makes real, empty directories (features.dirs)', async (ctx) => {
        if (!s.features.dirs || !s.mkdir) return ctx.skip();
        await s.mkdir('dirs/empty/');
        const listed = await listAll(s, { prefix: 'dirs/' });
        expect(listed.map((x) => [x.key, x.isDir])).toEqual([['dirs/empty/', true]]);
        expect((await s.head('dirs/empty/')).isDir).toBe(true);
        await s.delete('dirs/empty/');
        expect(await listAll(s, { prefix: 'dirs/' })).toEqual([]);
      });

      it('copies server-side (features.copy)', async (ctx) => {
        if (!s.features.copy || !s.copySource || !s.copyFrom) return ctx.skip();
        await s.put('copy/src', Buffer.from('copied bytes'), { size: 12 });
        const src = s.copySource('copy/src');
        expect(src.scope).toBe(s.features.copy.scope);
        await s.copyFrom('copy/dst', src, { size: 12 });
        expect((await readAll(await s.get('copy/dst'))).toString()).toBe('copied bytes');
      });

      it('classifies injected faults: 503 → throttled, 500 and dropped connections → transient', async (ctx) => {
        if (!t.inject) return ctx.skip();
        await s.put('faults/x', Buffer.from('x'), { size: 1 });
        t.inject('throttle', 1);
        await rejectsWithCode(s.head('faults/x'), 'FERRY_THROTTLED');
        t.inject('error', 1);
        await rejectsWithCode(s.head('faults/x'), 'FERRY_TRANSIENT');
        t.inject('drop', 1);
        await rejectsWithCode(s.head('faults/x'), 'FERRY_TRANSIENT');
        t.inject('error', 1);
        await rejectsWithCode(listAll(s, { prefix: 'faults/' }), 'FERRY_TRANSIENT');
        expect((await s.head('faults/x')).size).toBe(1);
      });

      it('says FERRY_PERMISSION_DENIED for refused credentials', async (ctx) => {
        if (!t.openWithBadCredentials) return ctx.skip();
        const bad = await t.openWithBadCredentials();
        try {
          await rejectsWithCode(bad.head('basic/hello.txt'), 'FERRY_PERMISSION_DENIED');
          await rejectsWithCode(listAll(bad, { prefix: '' }), 'FERRY_PERMISSION_DENIED');
        } finally {
          await bad.close?.();
        }
      });
    });
  });
}
