import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, constants as fsConstants, openSync, readSync, writeSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileStore } from '../../../src/shared/storage/file/index.js';
import { describeConformance, localTemporaries } from './conformance.js';
import { describeTreeSafety } from './tree-safety.js';

describeConformance('file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-file-'));
  return {
    store: new FileStore(dir + '/'),
    emptySegments: false,
    maxKeyBytes: 1024,
    maxNameBytes: 255,
    temporaries: () => localTemporaries(dir),
    openInplace: async () => new FileStore(dir + '/', { inplace: true }),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

describeTreeSafety('file', async () => {
  // The root is one level down, so that what lies "outside the destination" is still ours to clean.
  const dir = await mkdtemp(join(tmpdir(), 'ferry-file-'));
  const root = join(dir, 'root') + '/';
  await mkdir(root);
  return {
    store: new FileStore(root),
    root,
    openInplace: async () => new FileStore(root, { inplace: true }),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

/** setfacl (package acl) for the default-ACL case. */
const hasSetfacl = spawnSync('setfacl', ['--version']).status === 0;

describe('file store: many small files at once', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ferry-file-many-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  // load writes an archive's small files in batches: each must land whole with its attributes and owner, and a failing one must fail alone.
  it('putMany writes each file with its mode, mtime and owner, and fails only the item that cannot be written, in order', async () => {
    const store = new FileStore(dir + '/');
    try {
      // Never written through a symlink: that item fails, the others are written.
      await mkdir(join(dir, 'elsewhere'));
      await symlink(join(dir, 'elsewhere'), join(dir, 'link'));
      const mtime = Date.UTC(2020, 0, 2, 3, 4, 5);
      const results = await store.putMany([
        { key: 'd/one', body: Buffer.from('one'), options: { size: 3, mode: 0o4751, mtime }, owner: { uid: 1234, gid: 4321 } },
        { key: 'link/two', body: Buffer.from('two'), options: { size: 3 } },
        { key: 'd/three', body: Buffer.from('three'), options: { size: 5 } },
      ]);
      expect(results[0]).toBeUndefined();
      expect((results[1] as { code?: string } | undefined)?.code).toBe('FERRY_UNSAFE_PATH');
      expect(await readdir(join(dir, 'elsewhere'))).toEqual([]);
      expect(results[2]).toBeUndefined();
      expect(await readFile(join(dir, 'd/one'), 'utf8')).toBe('one');
      expect(await readFile(join(dir, 'd/three'), 'utf8')).toBe('three');
      const st = await stat(join(dir, 'd/one'));
      expect(st.mtimeMs).toBe(mtime);
      if (process.getuid?.() === 0) {
        expect([st.uid, st.gid]).toEqual([1234, 4321]);
        // chown before chmod: the set-user-ID bit survives.
        expect(st.mode & 0o7777).toBe(0o4751);
      } else expect(st.mode & 0o777).toBe(0o751);
      expect((await readdir(join(dir, 'd'))).sort()).toEqual(['one', 'three']);
    } finally {
      await store.close();
    }
  });

  // load into an empty destination creates its small files at their names (no temporary, no rename):
  // nothing already there may be replaced or written through, and the attributes must come out as
  // exactly as through a temporary, also where the umask or a set-group-ID directory would change them.
  it('putMany fresh creates each file at its name, fails what is there already, and sets modes and groups exactly', async () => {
    const store = new FileStore(dir + '/');
    const root0 = process.getuid?.() === 0;
    try {
      await mkdir(join(dir, 'd'));
      await writeFile(join(dir, 'd/old'), 'keep');
      await writeFile(join(dir, 'outside'), 'not through a link');
      await symlink(join(dir, 'outside'), join(dir, 'd/link'));
      await mkdir(join(dir, 'g'));
      if (root0) execFileSync('chown', [':4321', join(dir, 'g')]);
      execFileSync('chmod', ['2775', join(dir, 'g')]);
      const me = { uid: process.geteuid!(), gid: process.getegid!() };
      const results = await store.putMany(
        [
          { key: 'd/old', body: Buffer.from('new'), options: { size: 3 } },
          { key: 'd/link', body: Buffer.from('new'), options: { size: 3 } },
          { key: 'd/wide', body: Buffer.from('w'), options: { size: 1, mode: 0o666 } },
          { key: 'd/narrow', body: Buffer.from('n'), options: { size: 1, mode: 0o600 } },
          { key: 'g/mine', body: Buffer.from('m'), options: { size: 1, mode: 0o644 }, owner: me },
          { key: 'e/made', body: Buffer.from('e'), options: { size: 1 } },
        ],
        { fresh: true },
      );
      expect(results.map((r) => (r as { code?: string } | undefined)?.code)).toEqual(['FERRY_ALREADY_EXISTS', 'FERRY_ALREADY_EXISTS', undefined, undefined, undefined, undefined]);
      expect(await readFile(join(dir, 'd/old'), 'utf8')).toBe('keep');
      expect(await readFile(join(dir, 'outside'), 'utf8')).toBe('not through a link');
      expect((await stat(join(dir, 'd/wide'))).mode & 0o7777).toBe(0o666);
      expect((await stat(join(dir, 'd/narrow'))).mode & 0o7777).toBe(0o600);
      // The directory's group would have been the file's: the owner asked for is set all the same.
      expect((await stat(join(dir, 'g/mine'))).gid).toBe(me.gid);
      expect(await readFile(join(dir, 'e/made'), 'utf8')).toBe('e');
      // No temporary was made, or left.
      expect((await readdir(join(dir, 'd'))).sort()).toEqual(['link', 'narrow', 'old', 'wide']);
      expect(await readdir(join(dir, 'g'))).toEqual(['mine']);
    } finally {
      await store.close();
    }
  });

  it('putMany sets the mode asked for in a directory with a default ACL, where the umask does not decide the bits of a new file', async (ctx) => {
    // Bug: placeFilesSync left out the fchmod of a file it created when the umask kept the mode's bits, but a directory's default ACL, not the umask, masks them: 0o644 came out 0o640.
    if (!hasSetfacl) return ctx.skip('setfacl (Debian package acl, which .ci/run installs) is missing: the default-ACL case is not tested');
    const store = new FileStore(dir + '/');
    try {
      await mkdir(join(dir, 'acl'));
      execFileSync('setfacl', ['-d', '-m', 'u::rwx,g::r-x,o::---', join(dir, 'acl')]);
      const results = await store.putMany([{ key: 'acl/through-temp', body: Buffer.from('t'), options: { size: 1, mode: 0o644 } }]);
      const fresh = await store.putMany([{ key: 'acl/fresh', body: Buffer.from('f'), options: { size: 1, mode: 0o644 } }], { fresh: true });
      expect([...results, ...fresh]).toEqual([undefined, undefined]);
      expect((await stat(join(dir, 'acl/through-temp'))).mode & 0o7777).toBe(0o644);
      expect((await stat(join(dir, 'acl/fresh'))).mode & 0o7777).toBe(0o644);
    } finally {
      await store.close();
    }
  });

  // dump reads small files in batches on the file-system threads: each key must get its own bytes or its own error, never block on a FIFO.
  it('getMany returns the bytes of each file, and an error for a missing file and for a FIFO, in order', async () => {
    const store = new FileStore(dir + '/');
    try {
      await mkdir(join(dir, 'd'));
      await writeFile(join(dir, 'd/a'), 'alpha');
      await writeFile(join(dir, 'd/empty'), '');
      execFileSync('mkfifo', [join(dir, 'd/fifo')]);
      const r = await store.getMany(['d/a', 'd/missing', 'd/fifo', 'd/empty']);
      expect(r.map((x) => (Buffer.isBuffer(x) ? x.toString() : (x as { code?: string }).code))).toEqual(['alpha', 'FERRY_NOT_FOUND', 'FERRY_FATAL', '']);
    } finally {
      await store.close();
    }
  });

  // With the sizes a listing gave, a file is read in one call and stat'ed only when its size differs:
  // what changed since the listing must still come out right, and nothing but a regular file is read.
  it('getMany with listed sizes reads grown and shrunk files whole, and refuses what is no longer a regular file', async () => {
    const store = new FileStore(dir + '/');
    try {
      await mkdir(join(dir, 'd'));
      await writeFile(join(dir, 'd/same'), 'x'.repeat(100));
      await writeFile(join(dir, 'd/grew'), 'g'.repeat(200_000));
      await writeFile(join(dir, 'd/shrank'), 'short');
      await writeFile(join(dir, 'd/target'), 'outside the listing');
      await symlink(join(dir, 'd/target'), join(dir, 'd/link'));
      execFileSync('mkfifo', [join(dir, 'd/fifo')]);
      await mkdir(join(dir, 'd/sub'));
      const keys = ['d/same', 'd/grew', 'd/shrank', 'd/link', 'd/fifo', 'd/sub', 'd/missing'];
      const r = await store.getMany(keys, { sizes: [100, 10, 5000, 19, 0, 0, 3] });
      expect(r.map((x) => (Buffer.isBuffer(x) ? x.length : (x as { code?: string }).code))).toEqual([100, 200_000, 5, expect.any(String), 'FERRY_FATAL', expect.any(String), 'FERRY_NOT_FOUND']);
      expect(r[1]!.toString()).toBe('g'.repeat(200_000));
      expect(r[2]!.toString()).toBe('short');
      // A symlink that took a listed file's place is not followed.
      expect(Buffer.isBuffer(r[3])).toBe(false);
    } finally {
      await store.close();
    }
  });

  it('getMany with listed sizes neither takes a FIFO holding exactly the listed bytes for a file nor drains one holding fewer', async () => {
    // Bug: readPackedSync read size+1 bytes before any fstat, so a FIFO that took a listed file's place was read: its bytes (exactly the listed size) went into the dump as the file's, or (fewer) were taken from the pipe's reader.
    const store = new FileStore(dir + '/');
    const writers: number[] = [];
    try {
      await mkdir(join(dir, 'd'));
      const pending: Record<string, string> = { 'd/exact': 'FIFO!', 'd/fewer': 'ab' };
      for (const [key, bytes] of Object.entries(pending)) {
        execFileSync('mkfifo', [join(dir, key)]);
        // A writer holds the pipe open with bytes in it (O_RDWR: a FIFO opened so does not block).
        const w = openSync(join(dir, key), fsConstants.O_RDWR | fsConstants.O_NONBLOCK);
        writers.push(w);
        writeSync(w, bytes);
      }
      const r = await store.getMany(['d/exact', 'd/fewer'], { sizes: [5, 5] });
      expect(r.map((x) => (Buffer.isBuffer(x) ? `data ${x.toString()}` : 'refused'))).toEqual(['refused', 'refused']);
      // What the pipes held is still there for their reader.
      const left = writers.map((w) => {
        const b = Buffer.alloc(16);
        return b.subarray(0, readSync(w, b, 0, 16, null)).toString();
      });
      expect(left).toEqual(['FIFO!', 'ab']);
    } finally {
      for (const w of writers) closeSync(w);
      await store.close();
    }
  });
});
