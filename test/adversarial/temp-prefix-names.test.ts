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
import { isTempName, tempName, tempNamePrefix, threadTempName } from '../../src/shared/storage/temp.js';
import { FileStore } from '../../src/shared/storage/file/index.js';
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

  it('is not a temporary, while every name ferry writes is, also those of its file-system threads', async () => {
    // Making the test strict at first left out the threads' own form: a killed run's temporary
    // written on a thread would have been listed and copied as a user's file, and never reclaimed.
    const threadMade = threadTempName(tempNamePrefix(), 3, 41);
    expect(isTempName(tempName())).toBe(true);
    expect(isTempName(threadMade)).toBe(true);
    for (const name of ['.ferry-tmp-notes', '.ferry-tmp-', tempNamePrefix(), `.ferry-tmp-host_1_zzzzzzzz_0123456789`]) expect(isTempName(name), name).toBe(false);
    const dir = join(work, 'listing');
    mkdirSync(dir, { recursive: true });
    for (const n of [threadMade, tempName(), '.ferry-tmp-notes', 'k']) writeFileSync(join(dir, n), n);
    const store = new FileStore(dir + '/');
    try {
      const keys: string[] = [];
      for await (const page of store.list()) keys.push(...page.map((e) => e.key));
      expect(keys).toEqual(['.ferry-tmp-notes', 'k']);
    } finally {
      await store.close();
    }
  });
});
