import { describe, expect, it } from 'vitest';
import type { DumpEntry } from '../../../src/manager/dump/entry.js';
import { NamespaceCheck } from '../../../src/manager/dump/validate.js';

const dir = (path: string): DumpEntry => ({ path, type: 'dir', size: 0 });
const file = (path: string, size = 1): DumpEntry => ({ path, type: 'file', size });
const link = (path: string, target: string): DumpEntry => ({ path, type: 'symlink', size: 0, target });

/** The error `add` throws on the last of `entries` (all before it must pass). */
function refusal(entries: DumpEntry[]): { code: string; message: string } {
  const check = new NamespaceCheck();
  const last = entries.length - 1;
  entries.forEach((e, i) => {
    if (i < last) check.add(e);
  });
  try {
    check.add(entries[last]!);
  } catch (err) {
    return err as { code: string; message: string };
  }
  throw new Error(`accepted ${JSON.stringify(entries[last])}`);
}

describe('NamespaceCheck', () => {
  it('accepts a tree in any order and recounts it', () => {
    const check = new NamespaceCheck(16);
    // Children before their directories, as an archive written by another tool may have them.
    const entries: DumpEntry[] = [
      file('a/b/c', 5),
      dir('a/b'),
      dir(''),
      dir('a'),
      link('a/l', 'b/c'),
      link('a/b/up', '../../x'),
      file('x', 7),
      { path: 'a/hard', type: 'file', size: 7, linkTo: 'x' },
      dir('empty'),
      file('\udcff\udc80-raw', 0),
    ];
    for (const e of entries) check.add(e);
    expect(check.counters).toEqual({ files: 4, dirs: 3, symlinks: 2, bytes: 19 });
    expect(check.sizeOf('a/b/c')).toBe(5);
    expect(check.sizeOf('a/b')).toBeUndefined();
  });

  it('keeps the table correct across growth', () => {
    const check = new NamespaceCheck(16);
    for (let i = 0; i < 5000; i++) check.add(file(`d${i % 50}/f${i}`, i));
    for (let i = 0; i < 5000; i += 499) expect(check.sizeOf(`d${i % 50}/f${i}`)).toBe(i);
    expect(check.counters.files).toBe(5000);
    expect(refusal([file('d7/f7', 7), file('d7/f7', 7)]).code).toBe('FERRY_INVALID_DUMP');
  });

  const cases: [string, DumpEntry[], RegExp][] = [
    ['absolute path', [file('/etc/x')], /absolute/],
    ['.. component', [file('a/../../x')], /'\.\.'/],
    ['leading ..', [file('../x')], /'\.\.'/],
    ['. component', [file('a/./x')], /'\.'/],
    ['empty component', [file('a//x')], /empty component/],
    ['trailing slash', [file('a/')], /ending in '\/'/],
    ['NUL', [file('a\0b')], /NUL/],
    ['duplicate file', [file('a'), file('a')], /twice/],
    ['duplicate dir', [dir('a'), dir('a')], /twice/],
    ['duplicate root', [dir(''), dir('')], /twice/],
    ['file then dir', [file('a'), dir('a')], /both/],
    ['dir then file', [dir('a'), file('a')], /both/],
    ['file then implied dir', [file('a'), file('a/b')], /which is a file/],
    ['implied dir then file', [file('a/b/c'), file('a/b')], /both a directory/],
    ['deep implied dir then file', [file('a/b/c/d'), file('a')], /both a directory/],
    ['symlink then file through it', [link('l', 'd'), file('l/x')], /symlink/],
    ['symlink then deep file through it', [dir('d'), link('d/l', '.'), file('d/l/a/b')], /symlink/],
    ['file below then symlink', [file('l/x'), link('l', 'd')], /both a directory/],
    ['symlink absolute', [link('l', '/etc/passwd')], /absolute/],
    ['symlink out', [link('a/l', '../../x')], /outside the root/],
    ['symlink out from the root', [link('l', '..')], /outside the root/],
    ['symlink through another link', [link('d/l', '..'), link('x', 'd/l/..')], /after a name/],
    ['symlink without target', [{ path: 'l', type: 'symlink', size: 0 }], /without a target/],
    ['hard link out', [{ path: 'h', type: 'file', size: 0, linkTo: '../x' }], /outside the root/],
    ['hard link absolute', [{ path: 'h', type: 'file', size: 0, linkTo: '/etc/passwd' }], /outside the root/],
    ['hard link to a later file', [{ path: 'h', type: 'file', size: 1, linkTo: 'x' }], /not an earlier file/],
    ['hard link to a directory', [dir('d'), { path: 'h', type: 'file', size: 0, linkTo: 'd' }], /not an earlier file/],
    ['hard link of another size', [file('x', 3), { path: 'h', type: 'file', size: 0, linkTo: 'x' }], /3 bytes/],
    ['negative size', [file('x', -1)], /bad size/],
    ['fractional size', [file('x', 1.5)], /bad size/],
    ['unsafe size', [file('x', 2 ** 53)], /bad size/],
    ['string size', [{ path: 'x', type: 'file', size: '3' as unknown as number }], /bad size/],
    ['sized directory', [{ path: 'd', type: 'dir', size: 4 }], /only files/],
    ['unknown type', [{ path: 'x', type: 'fifo' as 'file', size: 0 }], /unknown entry type/],
    ['bad mode', [{ path: 'x', type: 'file', size: 0, mode: 0o170000 }], /bad mode/],
    ['file root', [file('')], /root must be a directory/],
  ];
  for (const [name, entries, message] of cases) {
    it(`refuses ${name}`, () => {
      const err = refusal(entries);
      expect(err.code).toBe('FERRY_INVALID_DUMP');
      expect(err.message).toMatch(message);
      expect(err.message).toContain(JSON.stringify(entries[entries.length - 1]!.path));
    });
  }

  it('validates 1,000,000 entries in bounded memory (timed, for the log)', () => {
    // 1,000 directories of 1,000 files, depth-first as a dump yields them; the paths are built on
    // the fly and dropped, as a streaming load does.
    global.gc?.();
    const before = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const check = new NamespaceCheck();
    for (let d = 0; d < 1000; d++) {
      const dirPath = `data/part-${String(d).padStart(4, '0')}`;
      check.add({ path: dirPath, type: 'dir', size: 0 });
      for (let f = 0; f < 999; f++) check.add({ path: `${dirPath}/object-${f}.bin`, type: 'file', size: f });
    }
    const ms = performance.now() - t0;
    const cpuMs = process.cpuUsage(cpu0).user / 1000;
    const after = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
    console.log(
      `NamespaceCheck: 1,000,000 entries in ${ms.toFixed(0)} ms wall, ${cpuMs.toFixed(0)} ms CPU (${((1e6 / ms) * 1000).toFixed(0)} entries/s), ` +
        `heap + array buffers grew ${((after - before) / 2 ** 20).toFixed(1)} MiB (${((after - before) / 1e6).toFixed(1)} bytes/entry; the table ${(check.tableBytes / 2 ** 20).toFixed(0)} MiB)`,
    );
    expect(check.counters.files).toBe(999_000);
    expect(check.counters.dirs).toBe(1000); // "data" is implied, not an entry
    expect(check.sizeOf('data/part-0999/object-998.bin')).toBe(998);
    expect(check.tableBytes / 1e6).toBeLessThanOrEqual(40); // at most 40 bytes an entry
  });
});
