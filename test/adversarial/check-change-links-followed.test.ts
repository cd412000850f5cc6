/**
 * Links followed (the default), a source key under a symlinked directory is read through the link,
 * as the listing saw it. Bug: --check-change looked the key up again without following links, found
 * nothing (a symlink on its way) and reported the file as vanished: skipped, not copied, exit 0. A
 * symlinked file was compared by its link's own size and failed as changed.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ferry } from '../manager/cli-harness.js';

const work = mkdtempSync(join(tmpdir(), 'ferry-checkchange-links-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('--check-change with links followed', () => {
  it('copies the keys under a symlinked directory and of a symlinked file, each once', async () => {
    const src = join(work, 'src');
    const dst = join(work, 'dst');
    mkdirSync(join(work, 'elsewhere', 'd'), { recursive: true });
    mkdirSync(src, { recursive: true });
    writeFileSync(join(work, 'elsewhere', 'd', 'f'), 'under the link');
    writeFileSync(join(work, 'elsewhere', 'g'), 'the linked file, longer than its link');
    symlinkSync('../elsewhere/d', join(src, 'ld'));
    symlinkSync('../elsewhere/g', join(src, 'lg'));
    writeFileSync(join(src, 'top'), 'top');
    const r = await ferry(['sync', '--check-change', '--json', src + '/', dst + '/']);
    expect(r.code).toBe(0);
    expect(r.json.copied).toBe(3);
    expect(r.json.skipped).toBe(0);
    expect(r.json.failed).toBe(0);
    expect(readFileSync(join(dst, 'ld', 'f'), 'utf8')).toBe('under the link');
    expect(readFileSync(join(dst, 'lg'), 'utf8')).toBe('the linked file, longer than its link');
    expect(existsSync(join(dst, 'top'))).toBe(true);
  });
});
