import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkHostKey } from '../../../src/shared/ssh/known-hosts.js';
import { parseAddress } from '../../../src/shared/storage/address.js';
import { openSftp, sftpBackend, SftpStore } from '../../../src/shared/storage/sftp/index.js';
import { makeKey, sshdMissing, startSshd, warnIfSshdMissing, writeClientFiles, type ClientFiles, type Sshd } from '../../support/sshd.js';
import { describeConformance, listAll, patternStream, readAll, sha256 } from './conformance.js';

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
      await fsp.writeFile(join(dir, 'tmp', '.ferry-tmp-dead-1'), 'x');
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
});
