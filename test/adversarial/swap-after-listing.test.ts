/**
 * A source file replaced by a symlink to a file outside SRC after it was listed and before it is
 * copied (a hostile tree racing the run). With --links, ferry does not follow links in SRC: the
 * copy must not carry the bytes of the file outside SRC into DST. The swap is made at a precise
 * moment by the run's filter, which the planner calls for each listed entry before its task exists.
 */
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runSync } from '../../src/manager/sync/run.js';
import { FileStore } from '../../src/shared/storage/file/index.js';
import { MemStore } from '../../src/shared/storage/mem.js';
import type { Entry, ObjectStore } from '../../src/shared/storage/types.js';
import { QUIET, SYNC_OPTIONS } from '../support/options.js';

const work = mkdtempSync(join(tmpdir(), 'ferry-adversarial-swap-'));
const stores: ObjectStore[] = [];
afterAll(async () => {
  for (const s of stores) await s.close?.();
  rmSync(work, { recursive: true, force: true });
});
let seq = 0;

const SECRET = 'root-only secret!';

for (const to of ['file', 'mem'] as const) {
  for (const size of ['small', 'large'] as const) {
    describe(`--links, ${size} file swapped for a symlink after listing (file to ${to})`, () => {
      it('copies nothing from outside SRC', async () => {
        const root = join(work, `t${++seq}`);
        const src = join(root, 'src');
        mkdirSync(src, { recursive: true });
        mkdirSync(join(root, 'dst'), { recursive: true });
        // Outside SRC, of the size the listing saw (the copy checks sizes).
        const body = size === 'small' ? SECRET : SECRET.repeat(200_000);
        writeFileSync(join(root, 'outside'), body);
        writeFileSync(join(src, 'shadow'), 'x'.repeat(body.length));
        const s = new FileStore(src + '/');
        const d: ObjectStore = to === 'file' ? new FileStore(join(root, 'dst') + '/') : new MemStore('dst');
        stores.push(s, d);
        const filter = (e: Entry): boolean => {
          if (e.key === 'shadow' && !lstatSync(join(src, 'shadow')).isSymbolicLink()) {
            unlinkSync(join(src, 'shadow'));
            symlinkSync(join(root, 'outside'), join(src, 'shadow'));
          }
          return true;
        };
        const r = await runSync(s, d, { ...SYNC_OPTIONS, links: true }, { stopListing: new AbortController().signal, stopNow: new AbortController().signal, logger: QUIET, filter });
        let copied: string | undefined;
        if (to === 'file') copied = existsSync(join(root, 'dst', 'shadow')) && !lstatSync(join(root, 'dst', 'shadow')).isSymbolicLink() ? readFileSync(join(root, 'dst', 'shadow'), 'utf8') : undefined;
        else copied = await d.get('shadow').then(async (b) => Buffer.concat(await b.toArray()).toString(), () => undefined);
        expect(copied?.includes('secret')).not.toBe(true);
        expect(r.stats.found).toBe(1);
      });
    });
  }
}

describe('--links, a source directory swapped for a symlink to outside SRC after listing (file to file)', () => {
  // O_NOFOLLOW guards the last component only: the opened file's /proc name must be where the key is.
  it('copies nothing from outside SRC', async () => {
    const root = join(work, `t${++seq}`);
    const src = join(root, 'src');
    mkdirSync(join(src, 'd'), { recursive: true });
    mkdirSync(join(root, 'outside'), { recursive: true });
    writeFileSync(join(root, 'outside', 'shadow'), SECRET);
    writeFileSync(join(src, 'd', 'shadow'), 'x'.repeat(SECRET.length));
    const s = new FileStore(src + '/');
    const d = new FileStore(join(root, 'dst') + '/');
    stores.push(s, d);
    const filter = (e: Entry): boolean => {
      if (e.key === 'd/shadow' && !lstatSync(join(src, 'd')).isSymbolicLink()) {
        rmSync(join(src, 'd'), { recursive: true });
        symlinkSync(join(root, 'outside'), join(src, 'd'));
      }
      return true;
    };
    await runSync(s, d, { ...SYNC_OPTIONS, links: true }, { stopListing: new AbortController().signal, stopNow: new AbortController().signal, logger: QUIET, filter });
    const copied = existsSync(join(root, 'dst', 'd', 'shadow')) ? readFileSync(join(root, 'dst', 'd', 'shadow'), 'utf8') : undefined;
    expect(copied?.includes('secret')).not.toBe(true);
  });
});
