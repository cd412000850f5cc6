/**
 * A directory that the rules keep but whose whole content they exclude ('logs/**') is not walked
 * (compileSubtreeTest). Bug: its files were then counted nowhere — `excluded: 0` while three
 * source files were left out — where a directory excluded itself ('logs/') counts once for its
 * sub-tree. Either way the destination's copies under it stay, even with --delete-dst.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ferry } from '../manager/cli-harness.js';

const work = mkdtempSync(join(tmpdir(), 'ferry-adversarial-unwalked-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let seq = 0;

function write(root: string, files: Record<string, string>): void {
  for (const [k, v] of Object.entries(files)) {
    mkdirSync(join(root, k, '..'), { recursive: true });
    writeFileSync(join(root, k), v);
  }
}
const files = (root: string): string[] => (readdirSync(root, { recursive: true, withFileTypes: true }) as import('node:fs').Dirent[]).filter((d) => d.isFile()).map((d) => join(d.parentPath, d.name).slice(root.length + 1)).sort();

describe('sub-trees the rules exclude are not walked, and still counted', () => {
  for (const rule of ['logs/', 'logs/**']) {
    it(`--exclude '${rule}' --delete-dst: the destination's logs stay, and the excluded source counts`, async () => {
      const root = join(work, `t${++seq}`);
      write(join(root, 'src'), { 'logs/a': 'a', 'logs/b': 'b', 'sub/logs/c': 'c', keep: 'k' });
      write(join(root, 'dst'), { 'logs/old': 'o', 'sub/logs/old': 'o', stray: 's' });
      const r = await ferry(['sync', '--exclude', rule, '--delete-dst', '--json', join(root, 'src') + '/', join(root, 'dst') + '/']);
      expect(files(join(root, 'dst'))).toEqual(['keep', 'logs/old', 'sub/logs/old']);
      expect(r.json).toMatchObject({ copied: 1, deleted: 1, failed: 0 });
      // Two sub-trees (logs/, sub/logs/) were left out: each counts once.
      expect(r.json.excluded).toBe(2);
    });
  }
});
