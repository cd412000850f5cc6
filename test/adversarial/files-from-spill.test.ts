/**
 * --files-from 'big/' when SRC has no big/ but DST has a large one (sorted on disk, --list-cutoff):
 * the line is reported as naming nothing, and the destination's listing that was started for it
 * must be let go at once. Bug: it was never iterated nor returned, so its spill directory (and
 * its open listing) stayed until the stores were closed at the end of the run — one per such line.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runSync } from '../../src/manager/sync/run.js';
import { FileStore } from '../../src/shared/storage/file/index.js';
import type { ObjectStore } from '../../src/shared/storage/types.js';
import { QUIET, SYNC_OPTIONS } from '../support/options.js';
import { spillsOf } from '../support/files.js';

const work = mkdtempSync(join(tmpdir(), 'ferry-adversarial-ffspill-'));
const open: ObjectStore[] = [];
afterAll(async () => {
  for (const s of open) await s.close?.();
  rmSync(work, { recursive: true, force: true });
});

describe('--files-from and large directories sorted on disk', () => {
  it('a line missing on SRC lets go of the destination listing started for it', async () => {
    const src = join(work, 'src');
    const dst = join(work, 'dst');
    mkdirSync(join(src, 'other'), { recursive: true });
    writeFileSync(join(src, 'other', 'x'), 'x');
    mkdirSync(join(dst, 'big'), { recursive: true });
    for (let i = 0; i < 2500; i++) writeFileSync(join(dst, 'big', `f${i}`), 'x');
    writeFileSync(join(work, 'list'), 'big/\nother/\n');
    const s = new FileStore(src + '/');
    const d = new FileStore(dst + '/');
    open.push(s, d);
    const r = await runSync(s, d, { ...SYNC_OPTIONS, deleteDst: true, filesFrom: join(work, 'list'), listCutoff: 10 }, { stopListing: new AbortController().signal, stopNow: new AbortController().signal, logger: QUIET });
    expect(r.stats.toJSON()).toMatchObject({ found: 2, copied: 1, failed: 1, deleted: 0 });
    expect(readdirSync(join(dst, 'big'))).toHaveLength(2500);
    expect(spillsOf()).toEqual([]);
  });
});
