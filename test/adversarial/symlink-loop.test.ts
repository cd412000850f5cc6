/**
 * Deletion needs a complete view. Following links (the default), a symlink that leads back to a
 * directory above it (src/a/up -> ..) is not entered, so nothing under it is listed. Bug: it was
 * listed as an empty directory, and --delete-dst deleted the destination's a/up/x, silently, with
 * exit 0. rsync -L fails such a sub-tree (and then deletes nothing); ferry must protect it and say
 * why, as for any sub-tree it could not list.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ferry } from '../manager/cli-harness.js';

const work = mkdtempSync(join(tmpdir(), 'ferry-adversarial-loop-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('a symlink loop in SRC, links followed', () => {
  it('protects the destination under it from --delete-dst and says so', async () => {
    const src = join(work, 'src');
    const dst = join(work, 'dst');
    mkdirSync(join(src, 'a'), { recursive: true });
    mkdirSync(join(dst, 'a', 'up'), { recursive: true });
    writeFileSync(join(src, 'a', 'k'), 'k');
    symlinkSync('..', join(src, 'a', 'up'));
    writeFileSync(join(dst, 'a', 'up', 'x'), 'precious');
    writeFileSync(join(dst, 'stray'), 's');
    const r = await ferry(['sync', '--delete-dst', '--json', src + '/', dst + '/']);
    expect(existsSync(join(dst, 'a', 'up', 'x'))).toBe(true);
    expect(existsSync(join(dst, 'stray'))).toBe(false);
    expect(r.stderr).toMatch(/a\/up\/.*incomplete/);
    expect(r.json).toMatchObject({ copied: 1, deleted: 1, incomplete: 1 });
    expect(r.code).toBe(1);
  });
});
