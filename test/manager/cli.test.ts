import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync, chmodSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ferry as runFerry } from './cli-harness.js';

const roots: string[] = [];
afterAll(() => roots.forEach((r) => rmSync(r, { recursive: true, force: true })));
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'ferry-cli-'));
  roots.push(d);
  return d;
}

const ferry = (...args: string[]) => runFerry(args);

type Node = { type: string; mode?: number; mtime?: number; size?: number; sha?: string; target?: string };

/** Everything a user compares between two trees: types, content, link targets, modes, mtimes. */
function snapshot(root: string): Record<string, Node> {
  const out: Record<string, Node> = {};
  const walk = (rel: string) => {
    for (const name of readdirSync(join(root, rel))) {
      const p = join(root, rel, name);
      const key = rel ? `${rel}/${name}` : name;
      const st = lstatSync(p);
      if (st.isSymbolicLink()) out[key] = { type: 'link', target: readlinkSync(p), mtime: Math.floor(st.mtimeMs) };
      else if (st.isDirectory()) {
        out[key + '/'] = { type: 'dir', mode: st.mode & 0o7777, mtime: Math.floor(st.mtimeMs) };
        walk(key);
      } else out[key] = { type: 'file', mode: st.mode & 0o7777, mtime: Math.floor(st.mtimeMs), size: st.size, sha: createHash('sha256').update(readFileSync(p)).digest('hex') };
    }
  };
  walk('');
  return out;
}

const OLD = new Date('2021-03-04T05:06:07.250Z');

function sampleTree(root: string): void {
  mkdirSync(join(root, 'a/b/c'), { recursive: true });
  mkdirSync(join(root, 'empty/nested-empty'), { recursive: true });
  mkdirSync(join(root, 'pic'), { recursive: true });
  mkdirSync(join(root, '.hidden-dir'), { recursive: true });
  writeFileSync(join(root, 'a/b/c/deep.txt'), 'deep');
  writeFileSync(join(root, 'a/one.txt'), 'one');
  writeFileSync(join(root, 'a-b'), 'dash sorts before slash');
  writeFileSync(join(root, 'pic/1.png'), 'png1');
  writeFileSync(join(root, 'pic/2.jpg'), 'jpg2');
  writeFileSync(join(root, '4.png'), 'four');
  writeFileSync(join(root, '5.png'), 'five');
  writeFileSync(join(root, '.hidden'), 'secret');
  writeFileSync(join(root, '.hidden-dir/inside'), 'in');
  writeFileSync(join(root, 'exec.sh'), '#!/bin/sh\n');
  chmodSync(join(root, 'exec.sh'), 0o750);
  writeFileSync(join(root, 'private'), 'p');
  chmodSync(join(root, 'private'), 0o600);
  symlinkSync('a/one.txt', join(root, 'link-to-one'));
  symlinkSync('does/not/exist', join(root, 'dangling'));
  for (const name of ['with space', '100%', 'hash#tag', 'what?', 'a+b', '日本語のファイル', 'Ελληνικά', 'emoji 😀🚀', 'caf\u00e9', 'cafe\u0301']) {
    writeFileSync(join(root, 'names-' + name), name);
  }
  chmodSync(join(root, 'empty'), 0o700);
  // Times last, deepest first, as writing into a directory changes its mtime.
  const paths = Object.keys(snapshot(root)).sort((x, y) => y.length - x.length);
  for (const p of paths) {
    const full = join(root, p);
    if (lstatSync(full).isSymbolicLink()) continue;
    utimesSync(full, OLD, OLD);
  }
}

describe('ferry sync between local directories', () => {
  it('makes an identical tree with --dirs --perms --links, then copies nothing', async () => {
    const d = tmp();
    sampleTree(join(d, 'src'));
    const first = await ferry('sync', '--dirs', '--perms', '--links', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(first.stderr).not.toContain('error');
    expect(first.code).toBe(0);
    const want = snapshot(join(d, 'src'));
    expect(snapshot(join(d, 'dst'))).toEqual(want);
    expect(first.json.copied).toBe(Object.keys(want).length);
    expect(first.json.failed).toBe(0);

    const second = await ferry('sync', '--dirs', '--perms', '--links', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(second.code).toBe(0);
    expect(second.json).toMatchObject({ copied: 0, failed: 0, lost: 0, skipped: Object.keys(want).length });
  });

  it('copies a changed file again: other size, or same size and other mtime (unless --size-only)', async () => {
    const d = tmp();
    sampleTree(join(d, 'src'));
    await ferry('sync', join(d, 'src') + '/', join(d, 'dst') + '/');
    writeFileSync(join(d, 'src/a/one.txt'), 'ONE');
    utimesSync(join(d, 'src/a/one.txt'), OLD, new Date(OLD.getTime() + 10_000));
    const sizeOnly = await ferry('sync', '--size-only', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(sizeOnly.json.copied).toBe(0);
    const quick = await ferry('sync', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    // The file, and the symlink to it, which is followed without --links.
    expect(quick.json.copied).toBe(2);
    expect(readFileSync(join(d, 'dst/link-to-one'), 'utf8')).toBe('ONE');
    expect(readFileSync(join(d, 'dst/a/one.txt'), 'utf8')).toBe('ONE');
    writeFileSync(join(d, 'src/a/one.txt'), 'longer now');
    const bySize = await ferry('sync', '--size-only', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(bySize.json.copied).toBe(2);
    expect(readFileSync(join(d, 'dst/a/one.txt'), 'utf8')).toBe('longer now');
  });

  it('--delete-dst removes extra files (and with --dirs, extra directories), never the excluded ones', async () => {
    const d = tmp();
    sampleTree(join(d, 'src'));
    await ferry('sync', '--dirs', join(d, 'src') + '/', join(d, 'dst') + '/');
    mkdirSync(join(d, 'dst/extra-dir/sub'), { recursive: true });
    writeFileSync(join(d, 'dst/extra-dir/sub/x'), 'x');
    writeFileSync(join(d, 'dst/extra-file'), 'y');
    writeFileSync(join(d, 'dst/kept.log'), 'excluded, so kept');
    const noDirs = await ferry('sync', '--delete-dst', '--exclude', '*.log', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(noDirs.json).toMatchObject({ deleted: 2, failed: 0 });
    expect(existsSync(join(d, 'dst/extra-dir/sub'))).toBe(true);
    expect(existsSync(join(d, 'dst/extra-file'))).toBe(false);
    const withDirs = await ferry('sync', '--delete-dst', '--dirs', '--exclude', '*.log', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(withDirs.json).toMatchObject({ deleted: 2, failed: 0 });
    expect(existsSync(join(d, 'dst/extra-dir'))).toBe(false);
    expect(readFileSync(join(d, 'dst/kept.log'), 'utf8')).toBe('excluded, so kept');
  });

  it('--force-update copies everything again; --dry changes nothing but reports', async () => {
    const d = tmp();
    sampleTree(join(d, 'src'));
    const dry = await ferry('sync', '--dry', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(dry.json.copied).toBeGreaterThan(10);
    expect(existsSync(join(d, 'dst'))).toBe(false);
    const first = await ferry('sync', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    const forced = await ferry('sync', '--force-update', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(forced.json.copied).toBe(first.json.copied);
    writeFileSync(join(d, 'dst/extra'), 'x');
    const dryDelete = await ferry('sync', '--dry', '--delete-dst', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(dryDelete.json.deleted).toBe(1);
    expect(existsSync(join(d, 'dst/extra'))).toBe(true);
  });

  it("--exclude '.*' leaves hidden files and directories behind", async () => {
    const d = tmp();
    sampleTree(join(d, 'src'));
    const r = await ferry('sync', '--exclude', '.*', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(r.code).toBe(0);
    const got = Object.keys(snapshot(join(d, 'dst')));
    expect(got.filter((k) => k.split('/').some((c) => c.startsWith('.')))).toEqual([]);
    expect(got).toContain('a/one.txt');
    expect(r.json.excluded).toBe(2);
  });

  it("--include 'pic/***' --include '4.png' --exclude '*' copies only those", async () => {
    const d = tmp();
    sampleTree(join(d, 'src'));
    const r = await ferry('sync', '--include', 'pic/***', '--include', '4.png', '--exclude', '*', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(r.code).toBe(0);
    expect(Object.keys(snapshot(join(d, 'dst'))).sort()).toEqual(['4.png', 'pic/', 'pic/1.png', 'pic/2.jpg']);
  });

  it('renames by prefix: ./te to ./ab turns test into abst and text into abxt', async () => {
    const d = tmp();
    mkdirSync(join(d, 'test'));
    mkdirSync(join(d, 'text'));
    mkdirSync(join(d, 'other'));
    writeFileSync(join(d, 'test/1'), '1');
    writeFileSync(join(d, 'text/2'), '2');
    writeFileSync(join(d, 'other/3'), '3');
    mkdirSync(join(d, 'mnt'));
    const r = await ferry('sync', join(d, 'te'), join(d, 'mnt/ab'));
    expect(r.code).toBe(0);
    expect(Object.keys(snapshot(join(d, 'mnt'))).sort()).toEqual(['abst/', 'abst/1', 'abxt/', 'abxt/2']);
  });

  it('copies a single named file into a destination directory under its own name', async () => {
    const d = tmp();
    writeFileSync(join(d, 'single.txt'), 'one file');
    writeFileSync(join(d, 'single.txt.bak'), 'its backup, matched by the prefix too');
    const r = await ferry('sync', '--json', join(d, 'single.txt'), join(d, 'out') + '/');
    expect(r.code).toBe(0);
    expect(readdirSync(join(d, 'out')).sort()).toEqual(['single.txt', 'single.txt.bak']);
    expect(readFileSync(join(d, 'out/single.txt'), 'utf8')).toBe('one file');
    // To a name instead of a directory, the prefix rule renames as juicefs does.
    await ferry('sync', join(d, 'single.txt'), join(d, 'renamed.txt'));
    expect(readFileSync(join(d, 'renamed.txt'), 'utf8')).toBe('one file');
  });

  it('keeps awkward names: spaces, %, #, ?, +, non-Latin scripts, emoji, NFC and NFD apart', async () => {
    const d = tmp();
    sampleTree(join(d, 'src'));
    await ferry('sync', join(d, 'src') + '/', join(d, 'dst') + '/');
    const names = readdirSync(join(d, 'dst')).filter((n) => n.startsWith('names-'));
    expect(names.sort()).toEqual(readdirSync(join(d, 'src')).filter((n) => n.startsWith('names-')).sort());
    expect(names).toHaveLength(10);
    for (const n of names) expect(readFileSync(join(d, 'dst', n), 'utf8')).toBe(n.slice('names-'.length));
  });

  it('--check-new verifies copies; --check-all compares existing files and repairs a corrupted one', async () => {
    const d = tmp();
    sampleTree(join(d, 'src'));
    const first = await ferry('sync', '--check-new', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(first.json.checked).toBe(first.json.copied);
    // Same size, same mtime, other bytes: only --check-all can see it.
    writeFileSync(join(d, 'dst/4.png'), 'FOUR');
    utimesSync(join(d, 'dst/4.png'), OLD, OLD);
    const plain = await ferry('sync', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(plain.json.copied).toBe(0);
    const all = await ferry('sync', '--check-all', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(all.json.copied).toBe(1);
    expect(readFileSync(join(d, 'dst/4.png'), 'utf8')).toBe('four');
  });

  it('--existing, --ignore-existing, --update and --limit', async () => {
    const d = tmp();
    sampleTree(join(d, 'src'));
    mkdirSync(join(d, 'dst'));
    writeFileSync(join(d, 'dst/4.png'), 'old four, longer');
    const existing = await ferry('sync', '--existing', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(existing.json.copied).toBe(1);
    expect(readdirSync(join(d, 'dst'))).toEqual(['4.png']);
    writeFileSync(join(d, 'dst/4.png'), 'changed again');
    const ignore = await ferry('sync', '--ignore-existing', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(readFileSync(join(d, 'dst/4.png'), 'utf8')).toBe('changed again');
    expect(ignore.json.copied).toBeGreaterThan(10);
    // The destination is newer: --update keeps it.
    const upd = await ferry('sync', '--update', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(readFileSync(join(d, 'dst/4.png'), 'utf8')).toBe('changed again');
    expect(upd.json.copied).toBe(0);
    const e = tmp();
    sampleTree(join(e, 'src'));
    const limited = await ferry('sync', '--limit', '3', '--json', join(e, 'src') + '/', join(e, 'dst') + '/');
    expect(limited.json.copied).toBe(3);
  });

  it('--files-from syncs only the listed keys and prefixes', async () => {
    const d = tmp();
    sampleTree(join(d, 'src'));
    writeFileSync(join(d, 'list'), 'a/b/\n4.png\nnot-there\n');
    const r = await ferry('sync', '--files-from', join(d, 'list'), '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    // A line naming nothing is reported and counted (rsync exits 23), never ignored in silence.
    expect(r.code).toBe(1);
    expect(r.json).toMatchObject({ failed: 1, copied: 2 });
    expect(r.stderr).toContain('"not-there"');
    expect(Object.keys(snapshot(join(d, 'dst'))).sort()).toEqual(['4.png', 'a/', 'a/b/', 'a/b/c/', 'a/b/c/deep.txt']);
  });

  it('--start and --end bound the keys', async () => {
    const d = tmp();
    sampleTree(join(d, 'src'));
    const r = await ferry('sync', '--start', '4.png', '--end', 'a/one.txt', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(r.code).toBe(0);
    expect(Object.keys(snapshot(join(d, 'dst'))).filter((k) => !k.endsWith('/')).sort()).toEqual(['4.png', '5.png', 'a-b', 'a/b/c/deep.txt', 'a/one.txt']);
  });

  it('--delete-src removes sources already on the destination; --delete-src-after moves', async () => {
    const d = tmp();
    mkdirSync(join(d, 'src/x'), { recursive: true });
    writeFileSync(join(d, 'src/x/1'), '1');
    writeFileSync(join(d, 'src/2'), '2');
    await ferry('sync', join(d, 'src') + '/', join(d, 'dst') + '/');
    const del = await ferry('sync', '--delete-src', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(del.json.deleted).toBe(2);
    expect(existsSync(join(d, 'src/2'))).toBe(false);
    writeFileSync(join(d, 'src/3'), '3');
    const moved = await ferry('sync', '--delete-src-after', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(moved.json.copied).toBe(1);
    expect(existsSync(join(d, 'src/3'))).toBe(false);
    expect(readFileSync(join(d, 'dst/3'), 'utf8')).toBe('3');
  });

  it('exits 1 and counts the failure when a key cannot be written', async () => {
    const d = tmp();
    mkdirSync(join(d, 'src'), { recursive: true });
    writeFileSync(join(d, 'src/blocked'), 'f');
    writeFileSync(join(d, 'src/ok'), 'ok');
    // A directory with content where the file must go: without --delete-dst nothing removes it.
    mkdirSync(join(d, 'dst/blocked'), { recursive: true });
    writeFileSync(join(d, 'dst/blocked/keep'), 'kept');
    const r = await ferry('sync', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(r.code).toBe(1);
    expect(r.json).toMatchObject({ copied: 1, failed: 1 });
    expect(r.stderr).toContain('"blocked"');
    expect(r.stderr).toContain('FERRY_IN_THE_WAY');
    expect(readFileSync(join(d, 'dst/blocked/keep'), 'utf8')).toBe('kept');
  });
});

describe('ferry sync failure handling and writing', () => {
  it('copies files whose names are not valid UTF-8 under the same bytes instead of passing over them', async () => {
    // Regression: Node decodes such names lossily, lstat then missed them, and they were skipped in
    // silence; later they were counted as failed, which ferry could not address.
    const d = tmp();
    mkdirSync(join(d, 'src'));
    writeFileSync(Buffer.from(join(d, 'src') + '/caf\xe9.txt', 'latin1'), 'latin-1 name');
    writeFileSync(Buffer.from(join(d, 'src') + '/caf\xe8.txt', 'latin1'), 'another one');
    writeFileSync(join(d, 'src/ok.txt'), 'ok');
    const r = await ferry('sync', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(r.code).toBe(0);
    expect(r.json).toMatchObject({ found: 3, copied: 3, failed: 0 });
    const names = readdirSync(join(d, 'dst'), { encoding: 'buffer' }).map((n) => n.toString('latin1'));
    expect(names.sort()).toEqual(['caf\xe8.txt', 'caf\xe9.txt', 'ok.txt']);
    expect(readFileSync(Buffer.from(join(d, 'dst') + '/caf\xe9.txt', 'latin1'), 'utf8')).toBe('latin-1 name');
  });

  it('--max-failure stops the run after that many failures', async () => {
    const d = tmp();
    mkdirSync(join(d, 'src'), { recursive: true });
    mkdirSync(join(d, 'dst'));
    const n = 1000;
    for (let i = 0; i < n; i++) {
      const name = `d${String(i).padStart(3, '0')}`;
      writeFileSync(join(d, 'src', name), 'x');
      mkdirSync(join(d, 'dst', name));
      writeFileSync(join(d, 'dst', name, 'keep'), 'a directory with content in the way');
    }
    const r = await ferry('sync', '--max-failure', '2', '--threads', '1', '--json', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(r.code).toBe(1);
    // No task starts after the third failure; those already running (for disk-to-disk copies, a
    // batch of 256) finish and are counted.
    expect(r.json.failed).toBeGreaterThan(2);
    expect(r.json.failed).toBeLessThan(n / 2);
    expect(r.json.found).toBe(r.json.failed);
    expect(r.json.lost).toBe(0);
    expect(r.stderr).toContain('--max-failure');
  });

  it('--inplace writes the file under its own name; the default writes a temporary name and renames it', async () => {
    const d = tmp();
    mkdirSync(join(d, 'src'));
    writeFileSync(join(d, 'src/f'), 'new content');
    mkdirSync(join(d, 'dst'));
    writeFileSync(join(d, 'dst/f'), 'old');
    const inode = lstatSync(join(d, 'dst/f')).ino;
    await ferry('sync', '--inplace', '--size-only', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(readFileSync(join(d, 'dst/f'), 'utf8')).toBe('new content');
    expect(lstatSync(join(d, 'dst/f')).ino).toBe(inode);
    writeFileSync(join(d, 'src/f'), 'newer content!');
    await ferry('sync', join(d, 'src') + '/', join(d, 'dst') + '/');
    expect(readFileSync(join(d, 'dst/f'), 'utf8')).toBe('newer content!');
    expect(lstatSync(join(d, 'dst/f')).ino).not.toBe(inode);
    expect(readdirSync(join(d, 'dst'))).toEqual(['f']);
  });
});

describe('ferry sync usage', () => {
  it('exits 2 naming a bad option or value', async () => {
    const bad = await ferry('sync', '--threads', 'many', '/a/', '/b/');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--threads');
    const unknown = await ferry('sync', '--frobnicate', '/a/', '/b/');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('--frobnicate');
    const size = await ferry('sync', '--max-size', '12 parsecs', '/a/', '/b/');
    expect(size.code).toBe(2);
    expect(size.stderr).toContain('--max-size');
    const missing = await ferry('sync', '/a/');
    expect(missing.code).toBe(2);
  });

  it('says so when the source directory does not exist', async () => {
    const d = tmp();
    const r = await ferry('sync', join(d, 'no-such-dir') + '/', join(d, 'out') + '/');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('does not exist');
    expect(existsSync(join(d, 'out'))).toBe(false);
  });

  it('names the supported schemes for an unknown one', async () => {
    const d = tmp();
    const r = await ferry('sync', 'gopher://x/y', d + '/');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('gopher://');
    expect(r.stderr).toMatch(/supported: .*file:\/\//);
  });

  it('documents every option in --help', async () => {
    const r = await ferry('sync', '--help');
    expect(r.code).toBe(0);
    for (const opt of ['--start', '--end', '--exclude', '--include', '--match-full-path', '--max-size', '--min-size', '--max-age', '--min-age', '--start-time', '--end-time', '--limit', '--update', '--force-update', '--existing', '--ignore-existing', '--files-from', '--dirs', '--perms', '--links', '--inplace', '--delete-src', '--delete-src-after', '--delete-dst', '--check-all', '--check-new', '--check-change', '--max-failure', '--dry', '--threads', '--list-threads', '--list-depth', '--no-https', '--storage-class', '--bwlimit', '--split-size', '--verbose', '--quiet', '--size-only', '--json']) {
      expect(r.stdout, opt).toContain(opt);
    }
  });

  it('refuses a --split-size that is not a size, as a usage error', async () => {
    const d = tmp();
    const r = await ferry('sync', '--split-size', 'big', d + '/', join(d, 'out') + '/');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/invalid value "big" for --split-size/);
  });

  it('never prints a secret from the address', async () => {
    const d = tmp();
    const r = await ferry('sync', 'gopher://AKID:TOPSECRET@bucket/x', d + '/');
    expect(r.stderr).not.toContain('TOPSECRET');
  });
});
