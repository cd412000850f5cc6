import { describe, expect, it } from 'vitest';
import { mergeListings, type Diff } from '../../../src/manager/sync/merge.js';
import type { Entry } from '../../../src/shared/storage/types.js';

const e = (key: string): Entry => ({ key, size: 0, mtime: 0, isDir: key.endsWith('/') });

async function* pages(keys: string[], per = 2): AsyncIterable<Entry[]> {
  for (let i = 0; i < keys.length; i += per) yield keys.slice(i, i + per).map(e);
}

async function merged(src: string[], dst: string[], per = 2): Promise<string[]> {
  const out: string[] = [];
  for await (const batch of mergeListings(pages(src, per), pages(dst, per))) {
    for (const d of batch as Diff[]) {
      if (d.kind === 'both') out.push(`=${d.src.key}`);
      else if (d.kind === 'srcOnly') out.push(`<${d.src.key}`);
      else out.push(`>${d.dst.key}`);
    }
  }
  return out;
}

describe('mergeListings', () => {
  const table: [string, string[], string[], string[]][] = [
    ['both empty', [], [], []],
    ['source only', ['a', 'b'], [], ['<a', '<b']],
    ['destination only', [], ['a', 'b'], ['>a', '>b']],
    ['equal', ['a', 'b', 'c'], ['a', 'b', 'c'], ['=a', '=b', '=c']],
    ['interleaved', ['a', 'c', 'e', 'g'], ['b', 'c', 'd', 'g', 'h'], ['<a', '>b', '=c', '>d', '<e', '=g', '>h']],
    // S3 order: '-' (0x2D) sorts before '/' (0x2F), so 'a-b' comes before 'a/'.
    ['a-b before a/', ['a-b', 'a/', 'a/x'], ['a/', 'a/x'], ['<a-b', '=a/', '=a/x']],
    // U+1F600 is above U+FFFF: UTF-16 puts it before U+FF5E, UTF-8 after.
    ['astral characters', ['\uFF5E', '\u{1F600}'], ['\u{1F600}'], ['<\uFF5E', '=\u{1F600}']],
    ['one side runs out mid-page', ['a', 'b', 'c', 'd', 'e'], ['c'], ['<a', '<b', '=c', '<d', '<e']],
  ];
  for (const [name, src, dst, want] of table) {
    it(name, async () => {
      expect(await merged(src, dst)).toEqual(want);
      expect(await merged(src, dst, 1)).toEqual(want);
      expect(await merged(src, dst, 1000)).toEqual(want);
    });
  }

  it('raises FERRY_LIST_ORDER naming the two keys when a listing goes backwards', async () => {
    await expect(merged(['a', 'c', 'b'], [])).rejects.toMatchObject({ code: 'FERRY_LIST_ORDER', message: expect.stringContaining('"b" came after "c"') });
    await expect(merged([], ['x', 'x'])).rejects.toMatchObject({ code: 'FERRY_LIST_ORDER' });
    // UTF-16 order is not UTF-8 order: a listing sorted with JavaScript's `<` is refused.
    await expect(merged(['\u{1F600}', '\uFF5E'], [])).rejects.toMatchObject({ code: 'FERRY_LIST_ORDER' });
  });
});
