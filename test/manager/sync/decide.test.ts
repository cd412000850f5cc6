import { describe, expect, it } from 'vitest';
import { decide, type DecisionOptions, type SideFeatures } from '../../../src/manager/sync/decide.js';
import type { Diff } from '../../../src/manager/sync/merge.js';
import type { Entry } from '../../../src/shared/storage/types.js';
import { SYNC_OPTIONS } from '../../support/options.js';

const base: DecisionOptions = SYNC_OPTIONS;
const fs: SideFeatures = { quickCheck: true, perms: true, owner: false, keptMtime: (ms) => ms };
const objects: SideFeatures = { quickCheck: false, perms: false, owner: false, keptMtime: (ms) => ms };

const T = 1_700_000_000_000;
const file = (size: number, mtime = T, extra: Partial<Entry> = {}): Entry => ({ key: 'k', size, mtime, isDir: false, mode: 0o644, ...extra });
const both = (src: Entry, dst: Entry): Diff => ({ kind: 'both', src, dst });
const srcOnly = (src: Entry): Diff => ({ kind: 'srcOnly', src });
const dstOnly = (dst: Entry): Diff => ({ kind: 'dstOnly', dst });
const dir: Entry = { key: 'd/', size: 0, mtime: T, isDir: true, mode: 0o755 };

describe('decide', () => {
  const cases: [string, Diff, Partial<DecisionOptions>, SideFeatures, string][] = [
    ['new key is copied', srcOnly(file(1)), {}, fs, 'copy'],
    ['--existing skips new keys', srcOnly(file(1)), { existing: true }, fs, 'skip'],
    ['same size and mtime is skipped', both(file(5), file(5)), {}, fs, 'skip'],
    ['different size is copied', both(file(5), file(6)), {}, objects, 'copy'],
    ['quick check: same size, other mtime is copied', both(file(5, T), file(5, T + 5000)), {}, fs, 'copy'],
    ['quick check ignores sub-second differences', both(file(5, T + 100), file(5, T + 900)), {}, fs, 'skip'],
    ['--size-only: same size, other mtime is skipped', both(file(5, T), file(5, T + 5000)), { sizeOnly: true }, fs, 'skip'],
    ['object stores compare sizes only', both(file(5, T), file(5, T + 5000)), {}, objects, 'skip'],
    ['--ignore-existing skips even changed keys', both(file(5), file(6)), { ignoreExisting: true }, fs, 'skip'],
    ['--force-update copies equal keys', both(file(5), file(5)), { forceUpdate: true }, fs, 'copy'],
    ['--update copies when the source is newer', both(file(5, T + 2000), file(5, T)), { update: true }, objects, 'copy'],
    ['--update skips when the destination is newer, whatever the size', both(file(5, T), file(9, T + 2000)), { update: true }, fs, 'skip'],
    ['--update ignores size differences at equal mtimes', both(file(5, T), file(9, T)), { update: true }, fs, 'skip'],
    ['--check-all checks likely-equal keys', both(file(5), file(5)), { checkAll: true }, fs, 'check'],
    ['--delete-src deletes likely-equal source keys', both(file(5), file(5)), { deleteSrc: true }, fs, 'deleteSrc'],
    ['--delete-src still copies changed keys', both(file(5), file(6)), { deleteSrc: true }, fs, 'copy'],
    ['--perms copies permissions when only the mode differs', both(file(5), file(5, T, { mode: 0o600 })), { perms: true }, fs, 'copyPerms'],
    ['--perms needs modes on both sides', both(file(5), file(5, T, { mode: 0o600 })), { perms: true }, objects, 'skip'],
    ['extra key is kept by default', dstOnly(file(3)), {}, fs, 'extra'],
    ['--delete-dst deletes extra keys', dstOnly(file(3)), { deleteDst: true }, fs, 'deleteDst'],
    ['--delete-dst keeps extra directories without --dirs', dstOnly(dir), { deleteDst: true }, fs, 'extra'],
    ['--delete-dst --dirs deletes extra directories', dstOnly(dir), { deleteDst: true, dirs: true }, fs, 'deleteDst'],
    ['directories are ignored without --dirs', srcOnly(dir), {}, fs, 'ignore'],
    ['--dirs copies new directories', srcOnly(dir), { dirs: true }, fs, 'copy'],
    ['symlink with another target is copied', both(file(3, T, { isSymlink: true, target: 'abc' }), file(3, T, { isSymlink: true, target: 'xyz' })), { links: true }, fs, 'copy'],
    ['a file replaced by a symlink is copied', both(file(3, T, { isSymlink: true, target: 'abc' }), file(3)), { links: true }, fs, 'copy'],
  ];
  for (const [name, d, o, f, want] of cases) it(name, () => expect(decide(d, { ...base, ...o }, f)).toBe(want));
});
