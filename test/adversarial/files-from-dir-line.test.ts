/**
 * A --files-from line without '/' that names a directory: the file store's head() gives it as key
 * 'a' with isDir (not 'a/'), so with --dirs --delete-src the planner "deletes" file key 'a' — a
 * no-op on a directory — and counts it deleted though the directory and its content stay. The
 * summary must say what happened: nothing was deleted.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ferry } from '../manager/cli-harness.js';

const work = mkdtempSync(join(tmpdir(), 'ferry-adversarial-dirline-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('--files-from naming a directory without a trailing slash', () => {
  it('--dirs --delete-src counts no deletion it did not make', async () => {
    const src = join(work, 'src');
    const dst = join(work, 'dst');
    mkdirSync(join(src, 'a'), { recursive: true });
    mkdirSync(join(dst, 'a'), { recursive: true });
    writeFileSync(join(src, 'a', 'x'), 'x');
    writeFileSync(join(work, 'list'), 'a\n');
    const r = await ferry(['sync', '--dirs', '--delete-src', '--json', '--files-from', join(work, 'list'), src + '/', dst + '/']);
    expect(existsSync(join(src, 'a', 'x'))).toBe(true);
    expect(r.json.deleted).toBe(0);
  });

  it("lines 'a', 'a-b' and 'a/': each key once, and the directory's mtime is set after its content is copied", async () => {
    const src = join(work, 'src2');
    const dst = join(work, 'dst2');
    mkdirSync(join(src, 'a'), { recursive: true });
    mkdirSync(dst, { recursive: true });
    writeFileSync(join(src, 'a', 'x'), 'x');
    writeFileSync(join(src, 'a', 'y'), 'y');
    writeFileSync(join(src, 'a-b'), 'ab');
    utimesSync(join(src, 'a'), new Date('2001-01-01T00:00:00Z'), new Date('2001-01-01T00:00:00Z'));
    writeFileSync(join(work, 'list2'), 'a\na-b\na/\n');
    const r = await ferry(['sync', '--dirs', '--json', '--files-from', join(work, 'list2'), src + '/', dst + '/']);
    expect(r.json).toMatchObject({ found: 4, copied: 4, failed: 0 });
    expect(statSync(join(dst, 'a')).mtime.toISOString()).toBe('2001-01-01T00:00:00.000Z');
    expect(r.code).toBe(0);
  });

  it("a line '.ferry' (ferry's reserved directory, without '/') is refused like '.ferry/'", async () => {
    const src = join(work, 'src3');
    const dst = join(work, 'dst3');
    mkdirSync(join(src, '.ferry'), { recursive: true });
    mkdirSync(dst, { recursive: true });
    writeFileSync(join(src, '.ferry', 'meta'), 'm');
    writeFileSync(join(work, 'list3'), '.ferry\n');
    const r = await ferry(['sync', '--dirs', '--json', '--files-from', join(work, 'list3'), src + '/', dst + '/']);
    expect(existsSync(join(dst, '.ferry'))).toBe(false);
    expect(r.json).toMatchObject({ failed: 1, copied: 0 });
  });
});
