/**
 * End to end through the CLI: a tree with awkward names travels local → s3 → oss → cos → hdfs →
 * sftp → local over every backend's real client, against the local servers of test/support, and
 * arrives byte-identical; every hop's second run copies nothing; --delete-dst works on each.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COS_SK, OSS_SK, startBackends, type Backends } from '../support/backends.js';
import { ferry as runFerry } from '../manager/cli-harness.js';

/** Names that break naive URL, path or XML handling, in nested directories, with a few sizes. */
const FILES: Record<string, Buffer> = {};
const names = ['with space', '100%', '%41 not A', 'a+b', 'hash#tag', 'what?', 'amp&eq=', '日本語', 'Ελληνικά', 'emoji 😀', 'caf\u00e9', 'cafe\u0301', 'a-b'];
names.forEach((n, i) => (FILES[`dir one/${n}`] = Buffer.from(`content of ${n} #${i}`)));
FILES['a/b/c/deep.txt'] = Buffer.from('deep');
FILES['a/empty'] = Buffer.alloc(0);
FILES['big/nine-mib.bin'] = Buffer.alloc(9 * 1024 * 1024, 7);
FILES['big/nine-mib.bin'].write('unique head');
FILES['top'] = Buffer.from('top');

function readTree(root: string, rel = ''): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(join(root, rel))) {
    const key = rel ? `${rel}/${name}` : name;
    if (statSync(join(root, key)).isDirectory()) Object.assign(out, readTree(root, key));
    else out[key] = createHash('sha256').update(readFileSync(join(root, key))).digest('hex');
  }
  return out;
}

let work: string;
let b: Backends;

const ferry = (...args: string[]) => runFerry(args, { registry: b.registry });

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'ferry-chain-'));
  for (const [k, v] of Object.entries(FILES)) {
    mkdirSync(join(work, 'src', k, '..'), { recursive: true });
    writeFileSync(join(work, 'src', k), v);
  }
  b = await startBackends('chain');
  if (b.sshd) mkdirSync(join(work, 'sftp'));
}, 120_000);

afterAll(async () => {
  await b?.close();
  rmSync(work, { recursive: true, force: true });
});

function hops(): [string, string][] {
  const addrs = [
    join(work, 'src') + '/',
    b.s3Addr('chain', 'tree/'),
    b.ossAddr('chain', 'tree/'),
    b.cosAddr('chain', 'tree/'),
    b.hdfsAddr('/user/ferry/tree/'),
    ...(b.sshd ? [b.sftpAddr(join(work, 'sftp') + '/tree/')] : []),
    join(work, 'back') + '/',
  ];
  return addrs.slice(1).map((dst, i) => [addrs[i]!, dst]);
}

describe('a tree through every backend, by the CLI', () => {
  it('arrives byte-identical; each second run copies nothing', async () => {
    const n = Object.keys(FILES).length;
    for (const [src, dst] of hops()) {
      const first = await ferry('sync', '--json', src, dst);
      expect(first.stderr, `${src} → ${dst}`).not.toMatch(/error/);
      expect(first.code, `${src} → ${dst}`).toBe(0);
      expect(first.json, `${src} → ${dst}`).toMatchObject({ copied: n, failed: 0, lost: 0 });
      const second = await ferry('sync', '--json', src, dst);
      expect(second.json, `second run ${src} → ${dst}`).toMatchObject({ copied: 0, skipped: n, failed: 0 });
    }
    const want = Object.fromEntries(Object.entries(FILES).map(([k, v]) => [k, createHash('sha256').update(v).digest('hex')]));
    expect(readTree(join(work, 'back'))).toEqual(want);
    // No secret reached any output.
  }, 300_000);

  it('--delete-dst removes an extra key on every backend', async () => {
    for (const [src, dst] of hops()) {
      const store = await b.registry.open(dst);
      try {
        await store.put('zz-extra/stray', Buffer.from('not on the source'), { size: 17 });
        const r = await ferry('sync', '--delete-dst', '--json', src, dst);
        expect(r.code, dst).toBe(0);
        expect(r.json, dst).toMatchObject({ deleted: 1, copied: 0, failed: 0 });
        await expect(store.head('zz-extra/stray'), dst).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
      } finally {
        await store.close?.();
      }
    }
  }, 300_000);

  it('lists in parallel sub-trees (--list-threads, --list-depth) with the same outcome', async () => {
    const n = Object.keys(FILES).length;
    for (const [src, dst] of hops()) {
      const r = await ferry('sync', '--list-threads', '4', '--list-depth', '2', '--json', src, dst);
      expect(r.json, `${src} → ${dst}`).toMatchObject({ copied: 0, skipped: n, failed: 0, found: n });
    }
  }, 300_000);

  it('never prints a secret', async () => {
    const [src, dst] = hops()[2]!;
    const r = await ferry('sync', '--verbose', '--force-update', src, dst);
    for (const secret of [OSS_SK, COS_SK]) {
      expect(r.stderr).not.toContain(secret);
      expect(r.stdout).not.toContain(secret);
    }
  });
});
