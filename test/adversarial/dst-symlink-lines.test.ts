/**
 * The destination is listed without following links (DESIGN "Sync semantics"): a symlinked
 * directory in DST is one entry, and nothing under it counts as a copy. Bug: a --files-from line
 * ('d/' or 'd/f') or --start looked DST's keys up through such a link, so --delete-src deleted
 * source files whose only "copy" lay outside DST, where the full listing deletes nothing.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ferry } from '../manager/cli-harness.js';

const work = mkdtempSync(join(tmpdir(), 'ferry-adversarial-dstlink-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let seq = 0;

/** src/d/{f,g}; dst/d is a symlink to elsewhere/, which holds an identical f and a file of its own. */
function setup(): { root: string; src: string; dst: string; elsewhere: string } {
  const root = join(work, `t${++seq}`);
  const src = join(root, 'src');
  const dst = join(root, 'dst');
  const elsewhere = join(root, 'elsewhere');
  mkdirSync(join(src, 'd'), { recursive: true });
  mkdirSync(dst, { recursive: true });
  mkdirSync(elsewhere, { recursive: true });
  writeFileSync(join(src, 'd', 'f'), 'precious');
  writeFileSync(join(src, 'd', 'g'), 'g');
  cpSync(join(src, 'd', 'f'), join(elsewhere, 'f'), { preserveTimestamps: true });
  writeFileSync(join(elsewhere, 'victim'), 'not ours');
  symlinkSync('../elsewhere', join(dst, 'd'));
  return { root, src, dst, elsewhere };
}

describe('a symlinked directory in DST is not looked through, whatever selects the keys', () => {
  for (const how of [
    { name: "--files-from 'd/'", args: (root: string) => (writeFileSync(join(root, 'list'), 'd/\n'), ['--files-from', join(root, 'list')]) },
    { name: "--files-from 'd/f'", args: (root: string) => (writeFileSync(join(root, 'list'), 'd/f\n'), ['--files-from', join(root, 'list')]) },
    { name: '--start d/f', args: () => ['--start', 'd/f'] },
  ]) {
    it(`${how.name} --delete-src keeps the source file whose only "copy" is outside DST`, async () => {
      const t = setup();
      const r = await ferry(['sync', '--delete-src', '--json', ...how.args(t.root), t.src + '/', t.dst + '/']);
      expect(readFileSync(join(t.src, 'd', 'f'), 'utf8')).toBe('precious');
      expect(r.json.deleted).toBe(0);
      expect(r.code).toBe(1); // the copies into the symlinked directory are refused
    });

    it(`${how.name} counts nothing outside DST as extra or skipped`, async () => {
      const t = setup();
      const r = await ferry(['sync', '--delete-dst', '--json', ...how.args(t.root), t.src + '/', t.dst + '/']);
      expect(existsSync(join(t.elsewhere, 'victim'))).toBe(true);
      // What the full listing says too: d/f is not in DST (d is a link), so it is not skipped as equal.
      expect(r.json).toMatchObject({ skipped: 0, extra: 0, deleted: 0 });
    });
  }
});
