import { execFileSync } from 'node:child_process';
import { promises as fsp, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { SFTPWrapper } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkHostKey } from '../../../src/shared/ssh/known-hosts.js';
import { SftpPool } from '../../../src/shared/ssh/pool.js';
import { parseAddress } from '../../../src/shared/storage/address.js';
import { openSftp, sftpBackend, SftpStore } from '../../../src/shared/storage/sftp/index.js';
import { isTempName } from '../../../src/shared/storage/temp.js';
import { makeKey, sshdMissing, startSshd, warnIfSshdMissing, writeClientFiles, type ClientFiles, type Sshd } from '../../support/sshd.js';
import { describeConformance, listAll, localTemporaries, patternStream, readAll, sha256 } from './conformance.js';
import { describeTreeSafety } from './tree-safety.js';

warnIfSshdMissing();

/** One sshd for the whole file; each describe block gets its own directory on it. */
let shared: Promise<Sshd> | undefined;
function sshd(): Promise<Sshd> {
  shared ??= startSshd();
  return shared;
}

afterAll(async () => {
  if (shared) await (await shared).cleanup();
});

async function openStore(s: Sshd, client: ClientFiles, dir: string, extra: { channels?: number; inplace?: boolean } = {}): Promise<SftpStore> {
  return openSftp(parseAddress(`sftp://${s.user}@127.0.0.1:${s.port}${dir}/`), { ssh: client.sshOptions, ...extra });
}

describe.skipIf(sshdMissing !== undefined)('sftp backend', () => {
  describeConformance('sftp', async () => {
    const s = await sshd();
    const client = await writeClientFiles(s);
    const dir = await fsp.mkdtemp(join(s.dir, 'conformance-'));
    const store = await openStore(s, client, dir);
    return {
      store,
      emptySegments: false,
      maxKeyBytes: 1024,
      maxNameBytes: 255,
      temporaries: () => localTemporaries(dir),
      openInplace: () => openStore(s, client, dir, { inplace: true }),
      async openWithBadCredentials() {
        // A key the server has never seen: authentication must fail, not the host key check.
        const stranger = await makeKey(join(client.dir, 'stranger'));
        const bad = await writeClientFiles(s, { identityFiles: [stranger.path] });
        await fsp.copyFile(client.knownHostsPath, bad.knownHostsPath).catch(() => {});
        return openStore(s, bad, dir);
      },
      cleanup: () => fsp.rm(client.dir, { recursive: true, force: true }),
    };
  });

  // The store's root is a directory on this machine (the sshd runs here), one level down so that
  // what lies "outside the destination" is still the test's to clean.
  describeTreeSafety('sftp', async () => {
    const s = await sshd();
    const client = await writeClientFiles(s);
    const dir = await fsp.mkdtemp(join(s.dir, 'tree-safety-'));
    const root = join(dir, 'root') + '/';
    await fsp.mkdir(root);
    return {
      store: await openStore(s, client, root.slice(0, -1)),
      root,
      openInplace: () => openStore(s, client, root.slice(0, -1), { inplace: true }),
      cleanup: () => fsp.rm(dir, { recursive: true, force: true }),
    };
  });

  describe('specifics', () => {
    let s: Sshd;
    let client: ClientFiles;
    let dir: string;
    let store: SftpStore;
    beforeAll(async () => {
      s = await sshd();
      client = await writeClientFiles(s);
      dir = await fsp.mkdtemp(join(s.dir, 'specific-'));
      store = await openStore(s, client, dir);
    });
    afterAll(async () => {
      await store?.close();
    });

    it('writes through a temporary name and leaves none behind; inplace writes directly', async () => {
      await store.put('tmp/a', Buffer.from('one'));
      expect(await fsp.readdir(join(dir, 'tmp'))).toEqual(['a']);
      // A temporary file left by a crashed run is not listed.
      await fsp.writeFile(join(dir, 'tmp', '.ferry-tmp-elsewhere_1_0a0b0c0d_0000000001'), 'x');
      expect((await listAll(store, { prefix: 'tmp/' })).map((e) => e.key)).toEqual(['tmp/a']);
      const inplace = await openStore(s, client, dir, { inplace: true });
      try {
        await inplace.put('tmp/b', Buffer.from('two'));
        expect(await fsp.readFile(join(dir, 'tmp', 'b'), 'utf8')).toBe('two');
      } finally {
        await inplace.close();
      }
    });

    it('reports mode, owner and mtime as the disk has them', async () => {
      await store.put('meta/f', Buffer.from('abc'), { mode: 0o640, mtime: Date.UTC(2021, 5, 6, 7, 8, 9) });
      const st = await fsp.stat(join(dir, 'meta', 'f'));
      expect(st.mode & 0o777).toBe(0o640);
      expect(st.mtimeMs).toBe(Date.UTC(2021, 5, 6, 7, 8, 9));
      const [e] = await listAll(store, { prefix: 'meta/' });
      expect(e).toMatchObject({ key: 'meta/f', size: 3, mode: 0o640, uid: st.uid, gid: st.gid, mtime: Date.UTC(2021, 5, 6, 7, 8, 9) });
      // SFTP version 3 keeps whole seconds: a fractional mtime is truncated, never rounded up.
      await store.setAttrs('meta/f', { mtime: 1_600_000_000_999 });
      expect((await store.head('meta/f')).mtime).toBe(1_600_000_000_000);
    });

    it('lists symlinks as links, or what they point to with followSymlinks, without looping', async () => {
      await fsp.mkdir(join(dir, 'ln/real'), { recursive: true });
      await fsp.writeFile(join(dir, 'ln/real/file'), '12345');
      await fsp.symlink('real', join(dir, 'ln/dirlink'));
      await fsp.symlink('real/file', join(dir, 'ln/filelink'));
      await fsp.symlink('..', join(dir, 'ln/real/up'));
      await fsp.symlink('nowhere', join(dir, 'ln/broken'));
      const plain = await listAll(store, { prefix: 'ln/' });
      expect(plain.map((e) => [e.key, e.isSymlink ?? false, e.target])).toEqual([
        ['ln/broken', true, 'nowhere'],
        ['ln/dirlink', true, 'real'],
        ['ln/filelink', true, 'real/file'],
        ['ln/real/', false, undefined],
        ['ln/real/file', false, undefined],
        ['ln/real/up', true, '..'],
      ]);
      const followed = await listAll(store, { prefix: 'ln/', followSymlinks: true });
      expect(followed.map((e) => [e.key, e.size, e.isSymlink ?? false])).toEqual([
        ['ln/broken', 0 + (await fsp.lstat(join(dir, 'ln/broken'))).size, true],
        ['ln/dirlink/', 0, false],
        ['ln/dirlink/file', 5, false],
        // ln/dirlink/up points back at ln/, an ancestor: listed, not walked.
        ['ln/dirlink/up/', 0, false],
        ['ln/filelink', 5, false],
        ['ln/real/', 0, false],
        ['ln/real/file', 5, false],
        ['ln/real/up/', 0, false],
      ]);
    });

    it('makes missing parents, renames over existing files and deletes directories', async () => {
      await store.put('deep/a/b/c/d.txt', Buffer.from('deep'));
      await store.put('deep/a/b/c/d.txt', Buffer.from('deeper'));
      expect(await fsp.readFile(join(dir, 'deep/a/b/c/d.txt'), 'utf8')).toBe('deeper');
      // Parallel puts into one new directory race on mkdir; all must land.
      await Promise.all(Array.from({ length: 12 }, (_, i) => store.put(`race/x/${i}`, Buffer.from(String(i)))));
      expect((await fsp.readdir(join(dir, 'race/x'))).length).toBe(12);
      await store.delete('deep/a/b/c/d.txt');
      await store.delete('deep/a/b/c/');
      await store.delete('deep/a/b/c/');
      await expect(fsp.stat(join(dir, 'deep/a/b/c'))).rejects.toMatchObject({ code: 'ENOENT' });
    });

    it('names host, user and path in errors and maps SFTP statuses', async () => {
      const err = await store.head('no/such/key').catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'FERRY_NOT_FOUND' });
      expect((err as Error).message).toContain(`${s.user}@127.0.0.1:${s.port}${dir}/no/such/key`);
      // Reading a directory's key as a file where a file is a directory: not a directory.
      await store.put('notdir', Buffer.from('x'));
      await expect(store.head('notdir/')).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
      // A directory the login cannot write to gives PERMISSION_DENIED... unless the login is root.
      if (process.getuid?.() !== 0) {
        await fsp.mkdir(join(dir, 'ro'), { mode: 0o500 });
        await expect(store.put('ro/x', Buffer.from('x'))).rejects.toMatchObject({ code: 'FERRY_PERMISSION_DENIED' });
      }
    });

    it('resolves relative addresses against the home directory, scp style', async () => {
      const home = process.env['HOME'] ?? '/root';
      const rel = (await fsp.mkdtemp(join(home, 'ferry-sftp-rel-'))).slice(home.length + 1);
      try {
        await fsp.writeFile(join(home, rel, 'f'), 'home file');
        const config = `Host sshtest\n  HostName 127.0.0.1\n  Port ${s.port}\n  User ${s.user}\n`;
        const c2 = await writeClientFiles(s, { config, knownHosts: [] });
        const a = parseAddress(`sshtest:${rel}/`);
        expect(a).toMatchObject({ scheme: 'sftp', host: 'sshtest', bucket: `${rel}/` });
        const st = await openSftp(a, { ssh: c2.sshOptions });
        try {
          expect(st.description).toBe(`sftp://${s.user}@127.0.0.1:${s.port}/~/${rel}/`);
          expect((await readAll(await st.get('f'))).toString()).toBe('home file');
        } finally {
          await st.close();
        }
        // No path at all is the home too (it used to be the server's root '/').
        const bare = await openSftp(parseAddress(`sftp://${s.user}@127.0.0.1:${s.port}`), { ssh: client.sshOptions });
        try {
          expect(bare.description).toBe(`sftp://${s.user}@127.0.0.1:${s.port}/~/`);
          expect((await readAll(await bare.get(`${rel}/f`))).toString()).toBe('home file');
        } finally {
          await bare.close();
        }
      } finally {
        await fsp.rm(join(home, rel), { recursive: true, force: true });
      }
    });

    it('opens through the registry entry with the default ~/.ssh files', async () => {
      const oldHome = process.env['HOME'];
      const fakeHome = await fsp.mkdtemp(join(s.dir, 'home-'));
      await fsp.mkdir(join(fakeHome, '.ssh'));
      await fsp.copyFile(s.clientKey.path, join(fakeHome, '.ssh', 'id_ed25519'));
      await fsp.writeFile(join(fakeHome, '.ssh', 'config'), `Host box\n  HostName 127.0.0.1\n  Port ${s.port}\n`);
      process.env['HOME'] = fakeHome;
      try {
        const st = await sftpBackend.open(parseAddress(`box:${dir}/`), { env: {} });
        try {
          await st.put('registry/x', Buffer.from('via registry'));
          expect(await fsp.readFile(join(dir, 'registry/x'), 'utf8')).toBe('via registry');
        } finally {
          await st.close?.();
        }
        // The unknown host was recorded in the (fake) user's known_hosts.
        // (Hashed or not: Debian's /etc/ssh/ssh_config says HashKnownHosts yes.)
        const hostKey = Buffer.from(s.hostKey.publicLine.split(' ')[1]!, 'base64');
        const check = await checkHostKey([join(fakeHome, '.ssh', 'known_hosts')], `[127.0.0.1]:${s.port}`, hostKey);
        expect(check.status).toBe('known');
      } finally {
        if (oldHome === undefined) delete process.env['HOME'];
        else process.env['HOME'] = oldHome;
      }
    });

    it('keeps one connection per store', async () => {
      const st = await openStore(s, client, dir, { channels: 2 });
      try {
        await Promise.all(Array.from({ length: 20 }, (_, i) => st.put(`conn/${i}`, Buffer.from('x'))));
        const before = (s.log().match(/Accepted publickey/g) ?? []).length;
        await Promise.all(Array.from({ length: 20 }, (_, i) => st.head(`conn/${i}`)));
        expect((s.log().match(/Accepted publickey/g) ?? []).length).toBe(before);
      } finally {
        await st.close();
      }
    });

    it('fails a read in flight with FERRY_TRANSIENT when the connection drops, then reconnects', async () => {
      const size = 16 * 1024 * 1024;
      await store.put('drop/big', patternStream(size, 5), { size });
      const stream = await store.get('drop/big');
      const it = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
      expect((await it.next()).done).toBe(false);
      expect(await s.killSessions()).toBeGreaterThan(0);
      const rest = (async () => {
        for (;;) if ((await it.next()).done) return 'ended';
      })();
      await expect(rest).rejects.toMatchObject({ code: 'FERRY_TRANSIENT' });
      expect((await store.head('drop/big')).size).toBe(size);
    });

    it('moves 100 MiB in both directions quickly (pipelined requests)', async () => {
      const size = 100 * 1024 * 1024;
      const t0 = performance.now();
      await store.put('perf/big', patternStream(size, 3), { size });
      const t1 = performance.now();
      const got = await sha256(await store.get('perf/big'));
      const t2 = performance.now();
      expect(got.size).toBe(size);
      console.log(`sftp 100 MiB: put ${((t1 - t0) / 1000).toFixed(2)} s, get ${((t2 - t1) / 1000).toFixed(2)} s`);
      // One request at a time over loopback takes several times longer than this.
      expect(t1 - t0).toBeLessThan(20_000);
      expect(t2 - t1).toBeLessThan(20_000);
    }, 120_000);
  });

  // What the shared suite (tree-safety.ts) cannot see from outside: requests, the server's own
  // behaviour (realpath, FIFOs, v3 times) and dropped connections.
  describe('sftp store safety', () => {
    let s: Sshd;
    let client: ClientFiles;
    let base: string;
    const stores: SftpStore[] = [];
    beforeAll(async () => {
      s = await sshd();
      client = await writeClientFiles(s);
      base = await fsp.mkdtemp(join(s.dir, 'safety-'));
    });
    afterAll(async () => {
      for (const st of stores) await st.close();
    });

    /** A fresh destination root `dst/` beside an `outside/` directory the store must never touch. */
    async function fresh(extra: { inplace?: boolean } = {}): Promise<{ root: string; outside: string; store: SftpStore }> {
      const top = await fsp.mkdtemp(join(base, 't-'));
      const root = join(top, 'dst');
      const outside = join(top, 'outside');
      await fsp.mkdir(root);
      await fsp.mkdir(outside);
      await fsp.writeFile(join(outside, 'victim'), 'outside content');
      const store = await openStore(s, client, root, extra);
      stores.push(store);
      return { root, outside, store };
    }

    // A key with '..' from an object store would have written outside the destination.
    it('refuses keys that leave the root without a single request', async () => {
      const { root } = await fresh();
      // Port 1: nothing listens, so any request would fail FERRY_TRANSIENT instead.
      const dead = await openSftp(parseAddress(`sftp://${s.user}@127.0.0.1:1${root}/`), { ssh: client.sshOptions });
      try {
        for (const key of ['../escape', '/etc/abs', 'a//b', 'a/./b', 'a/../../escape', 'nul\0byte']) {
          const err = (await dead.put(key, Buffer.from('x')).catch((e: unknown) => e)) as Error;
          expect(err, key).toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
          expect(err.message).toContain(JSON.stringify(key));
        }
        for (const attempt of [() => dead.head('../x'), () => dead.delete('../outside/victim'), () => dead.setAttrs('../x', { mode: 0o600 }), () => listAll(dead, { prefix: '../outside/' })])
          await expect(attempt()).rejects.toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
      } finally {
        await dead.close();
      }
      await expect(fsp.stat(join(root, '..', 'escape'))).rejects.toMatchObject({ code: 'ENOENT' });
    });

    // realpath resolves a dangling link to its target's path, and a link deeper down behind a real directory: both must be caught.
    it('refuses writes through a dangling link and through a link below a real directory, and still reads through links', async () => {
      const { root, outside, store } = await fresh();
      await fsp.mkdir(join(root, 'real'));
      await fsp.symlink(outside, join(root, 'real', 'deeper'));
      await fsp.symlink(join(outside, 'nowhere'), join(root, 'dangling'));
      await store.put('real/first', Buffer.from('remembered: real/ is a directory'));
      for (const [what, attempt] of [
        ['put deeper', () => store.put('real/deeper/victim', Buffer.from('overwritten'))],
        ['put deeper, new directory', () => store.put('real/deeper/new/x', Buffer.from('x'))],
        ['put through a dangling link', () => store.put('dangling/new', Buffer.from('x'))],
        ['mkdir through a dangling link', () => store.mkdir('dangling/sub/')],
        ['mkdir on a dangling link', () => store.mkdir('dangling/')],
      ] as const) {
        const err = (await attempt().catch((e: unknown) => e)) as Error;
        expect(err, what).toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
        expect(err.message, what).toContain('is a symlink: ferry does not write through links inside the destination');
      }
      expect(readdirSync(outside)).toEqual(['victim']);
      expect(await fsp.readFile(join(outside, 'victim'), 'utf8')).toBe('outside content');
      // Reading through a link is fine (a source may follow links).
      expect((await readAll(await store.get('real/deeper/victim'))).toString()).toBe('outside content');
    });

    // The user chose the root; only links below it are refused.
    it('accepts a root that is itself a symlink', async () => {
      const { root } = await fresh();
      const alias = root + '-alias';
      await fsp.symlink(root, alias);
      const st = await openStore(s, client, alias);
      stores.push(st);
      await st.put('a/b/c', Buffer.from('via alias'));
      await st.mkdir('d/');
      await st.setAttrs('', { mtime: Date.UTC(2021, 0, 1) });
      expect(await fsp.readFile(join(root, 'a/b/c'), 'utf8')).toBe('via alias');
      expect((await fsp.stat(join(root, 'd'))).isDirectory()).toBe(true);
      expect((await fsp.stat(root)).mtimeMs).toBe(Date.UTC(2021, 0, 1));
    });

    // --inplace opens the key itself: a directory there made the open fail on every run.
    it('with --inplace, replaces an empty directory at the key and refuses one with content', async () => {
      const { root } = await fresh();
      const inplace = await openStore(s, client, root, { inplace: true });
      stores.push(inplace);
      await fsp.mkdir(join(root, 'empty'));
      await inplace.put('empty', Buffer.from('in place'));
      expect(await fsp.readFile(join(root, 'empty'), 'utf8')).toBe('in place');
      await fsp.mkdir(join(root, 'full'));
      await fsp.writeFile(join(root, 'full', 'child'), 'keep me');
      const err = (await inplace.put('full', Buffer.from('x')).catch((e: unknown) => e)) as Error;
      expect(err).toMatchObject({ code: 'FERRY_IN_THE_WAY' });
      expect(err.message).toContain('"full/"');
      expect(await fsp.readFile(join(root, 'full', 'child'), 'utf8')).toBe('keep me');
    });

    // Opening a FIFO over SFTP blocked the server's sftp-server (and the run) until a writer came.
    it('marks FIFOs and sockets as special, and refuses to read them without hanging', async () => {
      const { root, store } = await fresh();
      await fsp.mkdir(join(root, 'sp'));
      execFileSync('mkfifo', [join(root, 'sp', 'fifo')]);
      const server = createServer();
      await new Promise<void>((resolve) => server.listen(join(root, 'sp', 'sock'), resolve));
      try {
        await fsp.symlink('fifo', join(root, 'sp', 'to-fifo'));
        await fsp.writeFile(join(root, 'sp', 'plain'), 'plain');
        const listed = await listAll(store, { prefix: 'sp/' });
        expect(listed.map((e) => [e.key, e.special])).toEqual([
          ['sp/fifo', 'FIFO'],
          ['sp/plain', undefined],
          ['sp/sock', 'socket'],
          ['sp/to-fifo', undefined],
        ]);
        const followed = await listAll(store, { prefix: 'sp/to-', followSymlinks: true });
        expect(followed.map((e) => [e.key, e.special])).toEqual([['sp/to-fifo', 'FIFO']]);
        expect((await store.head('sp/fifo')).special).toBe('FIFO');
        expect((await store.head('sp/to-fifo', { followSymlinks: true })).special).toBe('FIFO');

        const deadline = new Promise((_, reject) => setTimeout(() => reject(new Error('get() of a FIFO hung')), 5000));
        for (const key of ['sp/fifo', 'sp/to-fifo', 'sp/sock']) {
          const err = (await Promise.race([store.get(key), deadline]).catch((e: unknown) => e)) as Error;
          expect(err, key).toMatchObject({ code: 'FERRY_FATAL' });
          expect(err.message, key).toMatch(/FIFO|socket/);
        }
        await expect(Promise.race([store.copyFrom('copy-of-fifo', store.copySource('sp/fifo'), { size: 0 }), deadline])).rejects.toMatchObject({ code: 'FERRY_FATAL' });
        // The store (and its channels) still answer.
        expect((await readAll(await store.get('sp/plain'))).toString()).toBe('plain');
      } finally {
        server.close();
      }
    });

    // SFTP v3 sends unsigned 32-bit seconds: a 1960 mtime became 2096, a 2200 one 2063.
    it('writes mtimes outside SFTP v3 range clamped to it, and declares the range', async () => {
      const { root, store } = await fresh();
      const max = (2 ** 32 - 1) * 1000;
      expect(store.features.attrs?.mtimeRange).toEqual({ min: 0, max });
      await store.put('old', Buffer.from('1960'), { mtime: Date.UTC(1960, 0, 1) });
      await store.put('future', Buffer.from('2200'), { mtime: Date.UTC(2200, 0, 1) });
      expect((await fsp.stat(join(root, 'old'))).mtimeMs).toBe(0);
      expect((await fsp.stat(join(root, 'future'))).mtimeMs).toBe(max);
      await store.put('set', Buffer.from('x'));
      await store.setAttrs('set', { mtime: Date.UTC(1900, 0, 1) });
      expect((await fsp.stat(join(root, 'set'))).mtimeMs).toBe(0);
      await store.setAttrs('set', { mtime: Date.UTC(3000, 0, 1) });
      expect((await store.head('set')).mtime).toBe(max);
      await store.copyFrom('copied', store.copySource('old'), { size: 4, mtime: Date.UTC(1969, 11, 31) });
      expect((await fsp.stat(join(root, 'copied'))).mtimeMs).toBe(0);
    });

    // A dropped connection mid-file left a temporary behind on every interrupted run.
    it('removes its temporary when the connection drops mid-file', async () => {
      const { root, store } = await fresh();
      let sent = 0;
      const body = new Readable({
        read() {
          if (sent >= 64) return void this.push(null);
          sent++;
          setTimeout(() => this.push(Buffer.alloc(1 << 20, 7)), 10);
        },
      });
      const putting = store.put('drop/partial', body, { size: 64 << 20 });
      putting.catch(() => {});
      // Wait until the temporary holds some bytes, then cut every connection.
      for (let i = 0; ; i++) {
        const names = await fsp.readdir(join(root, 'drop')).catch(() => [] as string[]);
        const tmp = names.find(isTempName);
        if (tmp && (await fsp.stat(join(root, 'drop', tmp)).catch(() => undefined))?.size) break;
        if (i > 500) throw new Error('no temporary appeared');
        await new Promise((r) => setTimeout(r, 10));
      }
      expect(await s.killSessions()).toBeGreaterThan(0);
      await expect(putting).rejects.toMatchObject({ code: 'FERRY_TRANSIENT' });
      expect(readdirSync(join(root, 'drop'))).toEqual([]);
    });

    // Checking every directory on every put would cost a round trip per small file.
    it('checks each directory once: many small puts cost no extra round trips', async () => {
      const { root } = await fresh();
      const calls = new Map<string, number>();
      const counting = (sftp: SFTPWrapper): SFTPWrapper =>
        new Proxy(sftp, {
          get(target, prop, receiver) {
            const v = Reflect.get(target, prop, receiver) as unknown;
            if (typeof v !== 'function' || typeof prop !== 'string') return v;
            return (...args: unknown[]) => {
              calls.set(prop, (calls.get(prop) ?? 0) + 1);
              return (v as (...a: unknown[]) => unknown).apply(target, args);
            };
          },
        });
      class CountingPool extends SftpPool {
        override withSftp<T>(fn: (sftp: SFTPWrapper) => Promise<T>, signal?: AbortSignal): Promise<T> {
          return super.withSftp((sftp) => fn(counting(sftp)), signal);
        }
      }
      const pool = new CountingPool({ host: '127.0.0.1', user: s.user, port: s.port }, client.sshOptions, { maxChannels: 2 });
      const st = new SftpStore(root + '/', pool, await pool.resolved());
      stores.push(st);
      await st.put('many/first', Buffer.from('x'));
      calls.clear();
      const n = 50;
      for (let i = 0; i < n; i += 10) await Promise.all(Array.from({ length: 10 }, (_, j) => st.put(`many/f${i + j}`, Buffer.from('x'), { mtime: Date.UTC(2020, 0, 1) })));
      expect(readdirSync(join(root, 'many')).length).toBe(n + 1);
      // open, write, fsetstat, close, rename: nothing per file to check directories.
      expect(calls.get('realpath') ?? 0).toBe(0);
      expect(calls.get('lstat') ?? 0).toBe(0);
      expect(calls.get('stat') ?? 0).toBe(0);
      expect(calls.get('open')).toBe(n);
      // A new directory costs one lstat (then mkdir), and is remembered.
      calls.clear();
      for (let i = 0; i < 5; i++) await st.put(`other/g${i}`, Buffer.from('x'));
      expect(calls.get('lstat')).toBe(1);
      expect(calls.get('mkdir')).toBe(1);
      expect(calls.get('open')).toBe(5);
    });
  });
});
