/**
 * Deletion needs a complete view — per sub-tree, whatever the listing concurrency. Bug: with
 * --list-threads > 1 a source directory that cannot be read, at a level split into parallel
 * sub-trees, failed the whole listing: every key after it was neither copied nor deleted, where
 * the sequential listing protects just that sub-tree and syncs the rest (DESIGN "Sync semantics").
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { chownTree } from '../support/files.js';

const NOBODY = 65534;
const asRoot = process.getuid?.() === 0;
const work = mkdtempSync(join(tmpdir(), 'ferry-adversarial-plist-'));
chmodSync(work, 0o755);
afterAll(() => rmSync(work, { recursive: true, force: true }));

function write(root: string, files: Record<string, string>): void {
  for (const [k, v] of Object.entries(files)) {
    mkdirSync(join(root, k, '..'), { recursive: true });
    writeFileSync(join(root, k), v);
  }
}


/** The built CLI, run as an unprivileged user (root reads every directory). */
function ferryAsNobody(args: string[]): { code: number; stderr: string; json: Record<string, number> } {
  const app = join(work, 'app');
  if (!existsSync(app)) {
    for (const p of ['bin', 'dist', 'package.json']) cpSync(join(process.cwd(), p), join(app, p), { recursive: true });
  }
  const r = spawnSync(process.execPath, [join(app, 'bin/ferry.js'), ...args], { uid: NOBODY, gid: NOBODY, encoding: 'utf8', cwd: work });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return { code: r.status ?? -1, stderr: r.stderr, json: line.startsWith('{') ? JSON.parse(line) : {} };
}

describe.skipIf(!asRoot)('an unreadable source directory with parallel listing', () => {
  for (const where of ['big/locked', 'locked']) {
    for (const opts of [[], ['--list-threads', '4', '--list-depth', '2'], ['--list-threads', '4', '--list-depth', '1']]) {
      it(`${where}/ unreadable, ${opts.join(' ') || 'sequential'}: only its sub-tree is protected, the rest is synced`, () => {
        const root = mkdtempSync(join(work, 't'));
        const src = join(root, 'src');
        const dst = join(root, 'dst');
        write(src, { [`${where}/in`]: 'i', 'big/f': 'f', 'open/o': 'o', 'zz/new': 'n' });
        write(dst, { [`${where}/in`]: 'i', [`${where}/extra`]: 'e', 'big/f': 'f', 'big/zstray': 's', 'open/o': 'o', 'open/stray': 's' });
        chownTree(root, NOBODY);
        chownSync(join(src, where), 0, 0);
        chmodSync(join(src, where), 0o700);
        const r = ferryAsNobody(['sync', '--delete-dst', '--json', ...opts, src + '/', dst + '/']);
        expect(r.code, r.stderr).toBe(1);
        expect(existsSync(join(dst, where, 'extra'))).toBe(true);
        expect(existsSync(join(dst, 'open', 'stray'))).toBe(false);
        expect(existsSync(join(dst, 'big', 'zstray'))).toBe(false);
        expect(existsSync(join(dst, 'zz', 'new'))).toBe(true);
        expect(r.json).toMatchObject({ incomplete: 1, copied: 1, deleted: 2 });
      });
    }
  }
});
