/**
 * Names that merely start with ferry's temporary prefix. Bug: every name starting '.ferry-tmp-' is
 * hidden from listings, whatever follows, so a user's source file '.ferry-tmp-notes' is never
 * copied and counted nowhere (exit 0), and a user's destination file of that name, older than a
 * day, is deleted as a "crash leftover" by a run without any delete option. Only names of the form
 * ferry writes (temp.ts tempName: .ferry-tmp-HOST_PID_RUN_RANDOM) are its temporaries.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ferry } from '../manager/cli-harness.js';

const work = mkdtempSync(join(tmpdir(), 'ferry-adversarial-tmpname-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("a user's file whose name starts with '.ferry-tmp-'", () => {
  it('on the source is copied, or at least counted: never dropped silently', async () => {
    const src = join(work, 'src1');
    const dst = join(work, 'dst1');
    mkdirSync(src, { recursive: true });
    writeFileSync(join(src, '.ferry-tmp-notes'), 'mine');
    writeFileSync(join(src, 'k'), 'k');
    const r = await ferry(['sync', '--json', src + '/', dst + '/']);
    const seen = r.json.copied! + r.json.failed! + r.json.excluded! + r.json.skipped!;
    expect(seen).toBe(2);
  });

  it('on the destination is not deleted by a run without a delete option', async () => {
    const src = join(work, 'src2');
    const dst = join(work, 'dst2');
    mkdirSync(src, { recursive: true });
    mkdirSync(dst, { recursive: true });
    writeFileSync(join(src, 'k'), 'k');
    writeFileSync(join(dst, '.ferry-tmp-notes'), 'mine');
    const old = new Date('2020-01-01T00:00:00Z');
    utimesSync(join(dst, '.ferry-tmp-notes'), old, old);
    await ferry(['sync', '--json', src + '/', dst + '/']);
    expect(existsSync(join(dst, '.ferry-tmp-notes'))).toBe(true);
  });
});
