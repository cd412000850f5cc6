import { describe, expect, it } from 'vitest';
import { MemStore } from '../../../src/shared/storage/mem.js';
import { withPrefix } from '../../../src/shared/storage/prefixed.js';
import { describeConformance, listAll, readAll } from './conformance.js';

describeConformance('mem', async () => {
  const store = new MemStore('conformance');
  return { store, pendingUploads: async () => store.openUploads };
});

// The prefix view every address with a path goes through: every call, multipart included, maps its keys.
describeConformance('mem under a prefix', async () => {
  const store = new MemStore('conformance-prefixed');
  return { store: withPrefix(store, 'view/'), pendingUploads: async () => store.openUploads, bigObjectBytes: 16 * 1024 * 1024 };
});

describe('mem: keys that hold raw bytes (features.rawNames)', () => {
  it('keeps a key with lone surrogates as the bytes it names, lists it back unchanged in byte order, and refuses keys that name no bytes', async () => {
    // Regression: keys were stored UTF-8 encoded, so every lone surrogate came back as U+FFFD.
    const s = new MemStore('raw');
    expect(s.features.rawNames).toBe(true);
    for (const key of ['a\uDCFFb', '\uDCC3', '\u00e9', 'z\u{1F600}', 'z\uDCFF', 'dir\uDC80/x']) await s.put(key, Buffer.from(key.length.toString()));
    expect((await listAll(s)).map((e) => e.key)).toEqual(['a\uDCFFb', 'dir\uDC80/x', 'z\u{1F600}', 'z\uDCFF', '\uDCC3', '\u00e9']);
    expect((await listAll(s, { prefix: 'dir\uDC80/' })).map((e) => e.key)).toEqual(['dir\uDC80/x']);
    expect((await listAll(s, { delimiter: '/' })).map((e) => e.key)).toContain('dir\uDC80/');
    expect((await listAll(s, { startAfter: '\uDCC3' })).map((e) => e.key)).toEqual(['\u00e9']);
    expect((await readAll(await s.get('a\uDCFFb'))).toString()).toBe('3');
    expect(await s.head('\uDCC3')).toMatchObject({ key: '\uDCC3', size: 1 });
    await s.delete('a\uDCFFb');
    await expect(s.head('a\uDCFFb')).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
    // U+DCC3 U+DCA9 would be the bytes of 'é': one object would have two keys.
    await expect(s.put('\uDCC3\uDCA9', Buffer.from('x'))).rejects.toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
    expect((await readAll(await s.get('\u00e9'))).toString()).toBe('1');
  });
});
