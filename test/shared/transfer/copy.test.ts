import { describe, expect, it } from 'vitest';
import { MemStore } from '../../../src/shared/storage/mem.js';
import { NotFoundError, ThrottledError, TransientError } from '../../../src/shared/errors.js';
import type { ObjectStore } from '../../../src/shared/storage/types.js';
import { Transfer, type TransferOptions } from '../../../src/shared/transfer/copy.js';
import { readAll } from '../storage/conformance.js';

const base: TransferOptions = {
  perms: false,
  links: false,
  checkNew: false,
  checkChange: false,
  deleteSrcAfter: false,
  deleteSrc: false,
  dry: false,
  signal: new AbortController().signal,
  retry: { attempts: 4, baseDelayMs: 1 },
};

/** A store whose get() fails the first `n` times with `err`: what a flaky network looks like. */
function flaky(store: MemStore, n: number, err: () => Error): ObjectStore & { calls: number } {
  const s = Object.create(store) as ObjectStore & { calls: number };
  s.calls = 0;
  s.get = async (key, o) => {
    s.calls++;
    if (s.calls <= n) throw err();
    return store.get(key, o);
  };
  // Force streaming: no server-side copy between the two.
  Object.defineProperty(s, 'features', { value: { ...store.features, copy: undefined } });
  return s;
}

function stores() {
  const src = new MemStore('src');
  const dst = new MemStore('dst');
  src.set('k', Buffer.from('hello'), { mtime: 1_600_000_000_000 });
  return { src, dst };
}

describe('Transfer', () => {
  it('retries transient and throttling errors, then succeeds', async () => {
    const { src, dst } = stores();
    const s = flaky(src, 2, () => new TransientError('reset'));
    const t = new Transfer(s, dst, base);
    const entry = await src.head('k');
    expect(await t.run({ v: 1, op: 'copy', entry })).toMatchObject({ result: 'copied', bytes: 5 });
    expect(s.calls).toBe(3);
    expect((await readAll(await dst.get('k'))).toString()).toBe('hello');
    const s2 = flaky(src, 1, () => new ThrottledError('slow down'));
    expect(await new Transfer(s2, dst, base).run({ v: 1, op: 'copy', entry })).toMatchObject({ result: 'copied' });
    expect(s2.calls).toBe(2);
  });

  it('gives up after the last attempt with the error itself', async () => {
    const { src, dst } = stores();
    const s = flaky(src, 10, () => new TransientError('down'));
    await expect(new Transfer(s, dst, base).run({ v: 1, op: 'copy', entry: await src.head('k') })).rejects.toMatchObject({ code: 'FERRY_TRANSIENT' });
    expect(s.calls).toBe(4);
  });

  it('does not retry errors that another attempt cannot fix', async () => {
    const { src, dst } = stores();
    const denied = Object.assign(new Error('EACCES'), { code: 'EACCES' });
    const s = flaky(src, 10, () => denied);
    await expect(new Transfer(s, dst, base).run({ v: 1, op: 'copy', entry: await src.head('k') })).rejects.toBe(denied);
    expect(s.calls).toBe(1);
  });

  it('skips a key that vanished after it was listed, with a warning', async () => {
    const { src, dst } = stores();
    const entry = await src.head('k');
    await src.delete('k');
    const out = await new Transfer(src, dst, base).run({ v: 1, op: 'copy', entry });
    expect(out).toMatchObject({ result: 'skipped' });
    expect(out.warning).toContain('vanished');
    await expect(dst.head('k')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('--check-change fails a copy whose source changed since it was listed', async () => {
    const { src, dst } = stores();
    const entry = await src.head('k');
    src.set('k', Buffer.from('HELLO'), { mtime: 1_700_000_000_000 });
    await expect(new Transfer(src, dst, { ...base, checkChange: true }).run({ v: 1, op: 'copy', entry })).rejects.toMatchObject({ code: 'FERRY_SOURCE_CHANGED' });
  });

  it('refuses a streamed copy whose size is not the listed one', async () => {
    const { src, dst } = stores();
    const entry = { ...(await src.head('k')), size: 4 };
    const s = flaky(src, 0, () => new Error());
    await expect(new Transfer(s, dst, { ...base, retry: { attempts: 1, baseDelayMs: 1 } }).run({ v: 1, op: 'copy', entry })).rejects.toMatchObject({ code: 'FERRY_SOURCE_CHANGED' });
  });

  it('--check-new compares both sides after the copy', async () => {
    const { src, dst } = stores();
    const out = await new Transfer(src, dst, { ...base, checkNew: true }).run({ v: 1, op: 'copy', entry: await src.head('k') });
    expect(out).toMatchObject({ result: 'copied', checked: true });
  });

  it('sets the source mtime on stores that keep it', async () => {
    const { src, dst } = stores();
    await new Transfer(src, dst, base).run({ v: 1, op: 'copy', entry: await src.head('k') });
    expect((await dst.head('k')).mtime).toBe(1_600_000_000_000);
  });
});

describe('Transfer: parts of a split copy', () => {
  it('uploads a range of the source as one part of the destination’s upload and hands back its ETag, counting the bytes', async () => {
    const src = new MemStore('src');
    const dst = new MemStore('dst', { parts: { minPartSize: 4, maxPartSize: 1 << 20, maxParts: 100 } });
    src.set('obj', Buffer.from('0123456789'));
    const entry = await src.head('obj');
    const upload = await dst.multipart.start('obj', 10, { partSize: 4 });
    let moved = 0;
    const t = new Transfer(src, dst, { ...base, onBytes: (n) => (moved += n) });
    const ref = { key: upload.key, uploadId: upload.uploadId };
    const p2 = await t.run({ v: 1, op: 'copyPart', entry, upload: ref, part: 2, first: 4, last: 7 });
    const p3 = await t.run({ v: 1, op: 'copyPart', entry, upload: ref, part: 3, first: 8, last: 9 });
    const p1 = await t.run({ v: 1, op: 'copyPart', entry, upload: ref, part: 1, first: 0, last: 3 });
    expect(p2).toMatchObject({ result: 'copied', bytes: 4, checked: false, part: { partNumber: 2, size: 4 } });
    expect(moved).toBe(10);
    await dst.multipart.complete(ref, [p1.part!, p2.part!, p3.part!]);
    expect((await readAll(await dst.get('obj'))).toString()).toBe('0123456789');
  });

  it('fails a part whose range the source no longer holds whole (it shrank) with FERRY_SOURCE_CHANGED, after its retries', async () => {
    const src = new MemStore('src');
    const dst = new MemStore('dst', { parts: { minPartSize: 4, maxPartSize: 1 << 20, maxParts: 100 } });
    src.set('obj', Buffer.from('0123456789'));
    const entry = await src.head('obj');
    src.set('obj', Buffer.from('012345'));
    const upload = await dst.multipart.start('obj', 10, { partSize: 4 });
    const t = new Transfer(src, dst, base);
    await expect(t.run({ v: 1, op: 'copyPart', entry, upload: upload, part: 2, first: 4, last: 7 })).rejects.toMatchObject({ code: 'FERRY_SOURCE_CHANGED' });
    await dst.multipart.abort(upload);
    expect(dst.openUploads).toBe(0);
  });
});
