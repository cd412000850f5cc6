import { describe, expect, it } from 'vitest';
import { listTree, type DirListing, type ReadRequest, type SortedListing, type WalkRecord } from '../../../src/shared/storage/tree.js';
import { PermissionDeniedError } from '../../../src/shared/errors.js';
import type { Entry } from '../../../src/shared/storage/types.js';

const file = (name: string, size = 1): WalkRecord => ({ name, kind: 'f', size, mtime: 0 });
const dir = (name: string, id?: string): WalkRecord => ({ name, kind: 'd', size: 0, mtime: 0, ...(id ? { id } : {}) });

/** A tree held in a map: directory key → its records, or an error for an unreadable one. */
function driver(tree: Record<string, WalkRecord[] | string>) {
  const reads: ReadRequest[] = [];
  const read = async (req: ReadRequest): Promise<DirListing> => {
    reads.push(req);
    const t = tree[req.read];
    if (t === undefined) return { records: [] };
    if (typeof t === 'string') throw new PermissionDeniedError(t);
    return { records: t };
  };
  return { read, reads };
}

async function keys(tree: Record<string, WalkRecord[] | string>, options: Parameters<typeof listTree>[0] = {}): Promise<Entry[]> {
  const out: Entry[] = [];
  for await (const page of listTree(options, 3, driver(tree).read)) out.push(...page);
  return out;
}

describe('the tree walk', () => {
  const tree: Record<string, WalkRecord[] | string> = {
    '': [file('b'), dir('a'), file('a-b'), dir('locked')],
    'a/': [file('2'), file('1'), dir('c')],
    'a/c/': [file('x')],
    'locked/': 'permission denied',
  };

  it('lists depth first in UTF-8 key order, directories sorted as if they ended in /', async () => {
    expect((await keys(tree)).map((e) => e.key)).toEqual(['a-b', 'a/', 'a/1', 'a/2', 'a/c/', 'a/c/x', 'b', 'locked/']);
  });

  it('marks a directory it could not read with the error, and goes on; an unreadable top fails', async () => {
    const entries = await keys(tree);
    expect(entries.find((e) => e.key === 'locked/')).toMatchObject({ isDir: true, error: 'permission denied' });
    expect(entries.filter((e) => e.error !== undefined)).toHaveLength(1);
    await expect(keys({ '': 'permission denied' })).rejects.toMatchObject({ code: 'FERRY_PERMISSION_DENIED' });
  });

  it('starts after startAfter without reading directories wholly before it', async () => {
    const d = driver(tree);
    const out: string[] = [];
    for await (const page of listTree({ startAfter: 'a/2' }, 3, d.read)) out.push(...page.map((e) => e.key));
    expect(out).toEqual(['a/c/', 'a/c/x', 'b', 'locked/']);
    // 'locked/' is read ahead while the walk is in 'a/': the order of reads is not the walk's.
    expect(d.reads.map((r) => r.read).sort()).toEqual(['', 'a/', 'a/c/', 'locked/']);
  });

  it('honours a prefix that ends mid-name and one level with a delimiter', async () => {
    expect((await keys(tree, { prefix: 'a' })).map((e) => e.key)).toEqual(['a-b', 'a/', 'a/1', 'a/2', 'a/c/', 'a/c/x']);
    expect((await keys(tree, { delimiter: '/' })).map((e) => e.key)).toEqual(['a-b', 'a/', 'b', 'locked/']);
  });

  it('never enters the same directory twice on one path (symlink cycles)', async () => {
    const loop: Record<string, WalkRecord[]> = {
      '': [dir('d', 'ID1')],
      'd/': [{ name: 'up', kind: 'l', size: 2, mtime: 0, target: '..', follow: { kind: 'd', size: 0, mtime: 0, id: 'ID1' } }, file('f')],
    };
    const out = (await keys(loop, { followSymlinks: true })).map((e) => e.key);
    expect(out).toEqual(['d/', 'd/f', 'd/up/']);
  });
});

describe('the tree walk: sub-trees not wanted', () => {
  it('lists a directory that skipDir names but never reads it or anything under it', async () => {
    const tree: Record<string, WalkRecord[]> = {
      '': [dir('keep'), dir('logs'), file('x')],
      'keep/': [file('1'), dir('logs')],
      'keep/logs/': [file('2')],
      'logs/': [file('3'), dir('deep')],
      'logs/deep/': [file('4')],
    };
    const d = driver(tree);
    const out: string[] = [];
    for await (const page of listTree({ skipDir: (key) => key.endsWith('logs/') }, 3, d.read)) out.push(...page.map((e) => e.key));
    expect(out).toEqual(['keep/', 'keep/1', 'keep/logs/', 'logs/', 'x']);
    expect(d.reads.map((r) => r.read)).toEqual(['', 'keep/']);
  });
});

describe('the tree walk: directories that come sorted a page at a time', () => {
  /** A driver whose directories of more than two records come as SortedListing, in pages of two. */
  function pagedDriver(tree: Record<string, WalkRecord[]>) {
    const closed: string[] = [];
    const read = async (req: ReadRequest): Promise<DirListing | SortedListing> => {
      const records = tree[req.read] ?? [];
      if (records.length <= 2) return { records };
      const key = (r: WalkRecord) => (r.kind === 'd' ? r.name + '/' : r.name);
      const sorted = [...records].sort((a, b) => (key(a) < key(b) ? -1 : 1));
      let i = 0;
      return {
        sorted: {
          next: async () => sorted.slice(i, (i += 2)),
          close: async () => {
            closed.push(req.read);
          },
        },
      };
    };
    return { read, closed };
  }
  const tree: Record<string, WalkRecord[]> = {
    '': [file('b'), dir('a'), file('a-b'), file('c'), dir('d')],
    'a/': [file('2'), file('1'), dir('c'), file('0')],
    'a/c/': [file('x')],
    'd/': [file('y')],
  };

  it('lists them in the same order as whole directories, each closed once', async () => {
    const p = pagedDriver(tree);
    const out: string[] = [];
    for await (const page of listTree({}, 3, p.read)) out.push(...page.map((e) => e.key));
    expect(out).toEqual((await keys(tree)).map((e) => e.key));
    expect(out).toEqual(['a-b', 'a/', 'a/0', 'a/1', 'a/2', 'a/c/', 'a/c/x', 'b', 'c', 'd/', 'd/y']);
    expect(p.closed.sort()).toEqual(['', 'a/']);
  });

  it('honours the name prefix and startAfter within them', async () => {
    const p = pagedDriver(tree);
    const out: string[] = [];
    for await (const page of listTree({ prefix: 'a', startAfter: 'a/1' }, 3, p.read)) out.push(...page.map((e) => e.key));
    expect(out).toEqual(['a/2', 'a/c/', 'a/c/x']);
  });

  it('closes the directories it holds when the listing stops early', async () => {
    // A listing dropped by its consumer kept what its large directories held (temporary files).
    const p = pagedDriver(tree);
    for await (const page of listTree({}, 1, p.read)) {
      if (page[0]!.key === 'a/1') break;
    }
    expect(p.closed.sort()).toEqual(['', 'a/']);
  });

  it('reads the next directory of a level while the walk is in one, and closes it when the listing stops first', async () => {
    // A thread or a server round trip per directory the walk need not wait for; what was read
    // ahead and never reached still lets go of what it holds.
    const p = pagedDriver({ '': [dir('a'), dir('b'), dir('c')], 'a/': [file('1'), file('2'), file('3')], 'b/': [file('4'), file('5'), file('6')], 'c/': [file('7')] });
    const reads: string[] = [];
    const read = (req: ReadRequest) => {
      reads.push(req.read);
      return p.read(req);
    };
    for await (const page of listTree({}, 1, read)) {
      if (page[0]!.key === 'a/2') break;
    }
    expect(reads).toEqual(['', 'a/', 'b/']);
    expect(p.closed.sort()).toEqual(['', 'a/', 'b/']);
  });

  it('does not enter a directory whose record carries an error', async () => {
    const broken: Record<string, WalkRecord[]> = { '': [{ ...dir('bad'), error: 'cannot read its attributes' }, file('z')], 'bad/': [file('never')] };
    const d = driver(broken);
    const out: Entry[] = [];
    for await (const page of listTree({}, 3, d.read)) out.push(...page);
    expect(out.map((e) => [e.key, e.error])).toEqual([
      ['bad/', 'cannot read its attributes'],
      ['z', undefined],
    ]);
    expect(d.reads.map((r) => r.read)).toEqual(['']);
  });
});

