import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { userInfo } from 'node:os';
import { PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAddress } from '../../../src/shared/storage/address.js';
import { batchStart, hdfsBackend, HdfsStore, hdfsUser } from '../../../src/shared/storage/hdfs/index.js';
import { encodePath } from '../../../src/shared/storage/hdfs/webhdfs.js';
import { compareKeys } from '../../../src/shared/storage/keys.js';
import { isTempName, TEMP_PREFIX, tempName, tempNamePrefix } from '../../../src/shared/storage/temp.js';
import { WebHdfsServer, type WebHdfsServerOptions } from '../../support/webhdfs-server.js';
import { describeConformance, listAll, readAll } from './conformance.js';
import { describeTreeSafety } from './tree-safety.js';

const HOME = '/user/ferry';

async function startServer(options: WebHdfsServerOptions = {}): Promise<WebHdfsServer> {
  const server = await WebHdfsServer.start({ groups: { ferry: ['ferry', 'staff'] }, ...options });
  server.mkdir(HOME, 'ferry', 0o700);
  return server;
}

function storeOn(server: WebHdfsServer, root: string, extra: Partial<ConstructorParameters<typeof HdfsStore>[0]> = {}): HdfsStore {
  return new HdfsStore({ host: '127.0.0.1', port: server.namenodePort, user: 'ferry', root, ...extra });
}

describeConformance('hdfs', async () => {
  const server = await startServer();
  const root = `${HOME}/conformance/`;
  return {
    store: storeOn(server, root),
    cleanup: () => server.stop(),
    inject: (fault, count) => server.inject(fault, count),
    openWithBadCredentials: async () => storeOn(server, root, { user: 'mallory' }),
    temporaries: async () => server.walk(root).filter((p) => isTempName(p.slice(p.lastIndexOf('/') + 1))),
    openInplace: async () => storeOn(server, root, { inplace: true }),
    emptySegments: false,
    maxNameBytes: 255,
    maxKeyBytes: 1024,
  };
});

// The tree lives in the test server's memory: the suite runs what goes through the store's API; the
// cases that plant files, links and temporaries are in 'hdfs tree safety' below.
describeTreeSafety(
  'hdfs',
  async () => {
    const server = await startServer();
    const root = `${HOME}/tree-safety/`;
    return {
      store: storeOn(server, root),
      root,
      openInplace: async () => storeOn(server, root, { inplace: true }),
      cleanup: () => server.stop(),
    };
  },
  { localFs: false },
);

describe('hdfs backend', () => {
  let server: WebHdfsServer;
  let s: HdfsStore;
  const root = `${HOME}/t/`;

  beforeAll(async () => {
    server = await startServer();
    s = storeOn(server, root);
  });
  afterAll(async () => {
    await s?.close();
    await server?.stop();
  });

  const countOps = (op: string, from: number) => server.requests.slice(from).filter((r) => r.op === op).length;

  it('opens hdfs:// addresses: user, namenode, port 9870 by default, directory as the root', async () => {
    const a = parseAddress(`hdfs://alice@127.0.0.1:${server.namenodePort}/user/ferry/t/sub`);
    expect(a).toMatchObject({ scheme: 'hdfs', host: '127.0.0.1', port: server.namenodePort, user: 'alice', bucket: '/user/ferry/t/', prefix: 'sub' });
    const st = await hdfsBackend.open(a, {});
    expect(st.description).toBe(`hdfs://alice@127.0.0.1:${server.namenodePort}/user/ferry/t/`);
    await st.close?.();
    const d = await hdfsBackend.open(parseAddress('hdfs://bob@namenode.example/data/'), {});
    expect(d.description).toBe('hdfs://bob@namenode.example:9870/data/');
    await d.close?.();
  });

  it('acts as the address user, else HADOOP_USER_NAME, else the login name, sent as user.name', async () => {
    expect(hdfsUser('alice', { HADOOP_USER_NAME: 'bob' })).toBe('alice');
    expect(hdfsUser(undefined, { HADOOP_USER_NAME: 'bob' })).toBe('bob');
    expect(hdfsUser(undefined, {})).toBe(userInfo().username);

    const from = server.requests.length;
    const st = await hdfsBackend.open(parseAddress(`hdfs://127.0.0.1:${server.namenodePort}/user/ferry/t/`), { env: { HADOOP_USER_NAME: 'ferry' } });
    await st.put('who/f', Buffer.from('x'), { size: 1 });
    expect((await readAll(await st.get('who/f'))).toString()).toBe('x');
    await st.close?.();
    const sent = server.requests.slice(from);
    expect(sent.length).toBeGreaterThanOrEqual(5);
    // Every request, to the namenode and to the datanode, carries the user.
    for (const r of sent) expect(r.user, `${r.server} ${r.op}`).toBe('ferry');
    expect(server.stat(`${root}who/f`)?.owner).toBe('ferry');
  });

  it('reads and writes through the 307 redirect to the datanode', async () => {
    const before = { ...server.redirects };
    const dn = { ...server.datanodeRequests };
    const data = Buffer.from('0123456789'.repeat(1000));
    await s.put('flow/obj', Readable.from([data.subarray(0, 4000), data.subarray(4000)]), { size: data.length });
    expect(server.redirects.CREATE - before.CREATE).toBe(1);
    expect(server.datanodeRequests.CREATE - dn.CREATE).toBe(1);
    expect(await server.read(`${root}flow/obj`)).toEqual(data);

    expect(await readAll(await s.get('flow/obj', { offset: 9995, length: 10 }))).toEqual(data.subarray(9995, 10005));
    expect(server.redirects.OPEN - before.OPEN).toBe(1);
    expect(server.datanodeRequests.OPEN - dn.OPEN).toBe(1);
    const open = server.requests.filter((r) => r.server === 'datanode' && r.op === 'OPEN').at(-1)!;
    expect(open.params).toMatchObject({ offset: '9995', length: '10', 'user.name': 'ferry' });
  });

  it('writes to a temporary name and renames it into place (not with inplace)', async () => {
    const from = server.requests.length;
    await s.put('tmp/a', Buffer.from('a'), { size: 1 });
    const creates = server.requests.slice(from).filter((r) => r.op === 'CREATE' && r.server === 'namenode');
    expect(creates).toHaveLength(1);
    expect(creates[0]!.path).toMatch(new RegExp(`^${root}tmp/\\.ferry-tmp-`));
    const rename = server.requests.slice(from).find((r) => r.op === 'RENAME')!;
    expect(rename.params).toMatchObject({ destination: `${root}tmp/a`, renameoptions: 'OVERWRITE' });
    expect(server.names(`${root}tmp`)).toEqual(['a']);

    const inplace = storeOn(server, root, { inplace: true });
    const from2 = server.requests.length;
    await inplace.put('tmp/b', Buffer.from('b'), { size: 1 });
    // The directory is made once per store; in place, the key is looked at (never written through a
    // link or into a directory), then written without a temporary.
    expect(server.requests.slice(from2).map((r) => `${r.server} ${r.op} ${r.path}`)).toEqual([
      `namenode MKDIRS ${root}tmp`,
      `namenode GETFILELINKSTATUS ${root}tmp/b`,
      `namenode CREATE ${root}tmp/b`,
      `datanode CREATE ${root}tmp/b`,
    ]);
    // Temporary names of other writers never show in listings.
    await inplace.client.create(`${root}tmp/.ferry-tmp-elsewhere_2_0a0b0c0d_0000000002`, Buffer.from('partial'));
    await inplace.close();
    expect((await listAll(s, { prefix: 'tmp/' })).map((e) => e.key)).toEqual(['tmp/a', 'tmp/b']);
  });

  it('removes the temporary file when the body fails, and refuses a body of the wrong size', async () => {
    let reads = 0;
    const failing = new Readable({
      read() {
        if (reads++ === 0) this.push(Buffer.alloc(1000, 1));
        else setImmediate(() => this.destroy(Object.assign(new Error('disk read failed'), { code: 'EIO' })));
      },
    });
    await expect(s.put('bad/f', failing, { size: 5000 })).rejects.toMatchObject({ code: 'FERRY_TRANSIENT' });
    await expect(s.put('bad/g', Readable.from([Buffer.alloc(10)]), { size: 20 })).rejects.toMatchObject({ code: 'FERRY_SOURCE_CHANGED' });
    await expect(s.put('bad/h', Readable.from([Buffer.alloc(30)]), { size: 20 })).rejects.toMatchObject({ code: 'FERRY_SOURCE_CHANGED' });
    await new Promise((r) => setTimeout(r, 50));
    expect(server.names(`${root}bad`)).toEqual([]);
  });

  // Regression: the `webhdfs` npm package handed a datanode's 503 body to the caller as file content.
  it('never hands an error body to the caller as content', async () => {
    await s.put('busy/f', Buffer.from('the real content'), { size: 16 });
    server.injectDatanodeRead('busy', 1);
    const err = await s.get('busy/f').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'FERRY_THROTTLED' });
    expect(String((err as Error).message)).toContain('BUSY');
    expect((await readAll(await s.get('busy/f'))).toString()).toBe('the real content');

    // A connection lost midway is an error on the stream, never a short file.
    const big = Buffer.alloc(200_000, 7);
    await s.put('busy/big', big, { size: big.length });
    server.injectDatanodeRead('cut', 1);
    const stream = await s.get('busy/big');
    await expect(readAll(stream)).rejects.toMatchObject({ code: 'FERRY_TRANSIENT' });

    // Namenode failures reject before any stream exists.
    await expect(s.get('busy/missing')).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
    server.inject('throttle', 1);
    await expect(s.get('busy/f')).rejects.toMatchObject({ code: 'FERRY_THROTTLED' });
  });

  it('classifies RemoteExceptions by name: a 403 StandbyException is transient, AccessControlException denied', async () => {
    await s.put('cls/f', Buffer.from('x'), { size: 1 });
    server.inject('standby', 1);
    await expect(s.head('cls/f')).rejects.toMatchObject({ code: 'FERRY_TRANSIENT' });
    const other = storeOn(server, root, { user: 'mallory' });
    const err = (await other.head('cls/f').catch((e: unknown) => e)) as Error;
    expect(err).toMatchObject({ code: 'FERRY_PERMISSION_DENIED' });
    expect(err.message).toContain(`127.0.0.1:${server.namenodePort}${root}cls/f`);
    expect(err.message).toContain('user=mallory');
    await expect(other.put('cls/g', Buffer.from('x'), { size: 1 })).rejects.toMatchObject({ code: 'FERRY_PERMISSION_DENIED' });
    await other.close();
    // A non-empty directory is not removed by delete(): a refusal that says so (FERRY_NOT_EMPTY), not a silent success.
    await expect(s.delete('cls/')).rejects.toMatchObject({ code: 'FERRY_NOT_EMPTY' });
    const missing = (await s.head('cls/nothing').catch((e: unknown) => e)) as Error;
    expect(missing).toMatchObject({ code: 'FERRY_NOT_FOUND' });
    expect(missing.message).toContain(`127.0.0.1:${server.namenodePort}${root}cls/nothing`);
  });

  it('shows SETTIMES and SETPERMISSION results in listings and on the server', async () => {
    await s.put('attrs/f', Buffer.from('abc'), { size: 3 });
    const mtime = Date.UTC(2021, 5, 6, 7, 8, 9, 123);
    await s.setAttrs('attrs/f', { mtime, mode: 0o640, uid: 1234, gid: 1234 });
    expect(server.stat(`${root}attrs/f`)).toMatchObject({ mtime, permission: 0o640, owner: 'ferry' });
    const [e] = await listAll(s, { prefix: 'attrs/' });
    expect(e).toMatchObject({ key: 'attrs/f', size: 3, mtime, mode: 0o640, isDir: false });
    // put() with mode and mtime sets both exactly (CREATE alone would be masked by the umask).
    await s.put('attrs/g', Buffer.from('y'), { size: 1, mode: 0o777, mtime });
    expect(server.stat(`${root}attrs/g`)).toMatchObject({ mtime, permission: 0o777 });
    await s.mkdir('attrs/d/', { mode: 0o750 });
    expect((await s.head('attrs/d/')).mode).toBe(0o750);
  });

  it('changes owner and group by name with SETOWNER (superuser for the owner)', async () => {
    await s.put('own/f', Buffer.from('x'), { size: 1 });
    await s.setOwner('own/f', { group: 'staff' });
    expect(server.stat(`${root}own/f`)).toMatchObject({ owner: 'ferry', group: 'staff' });
    await expect(s.setOwner('own/f', { owner: 'alice' })).rejects.toMatchObject({ code: 'FERRY_PERMISSION_DENIED' });
    const su = storeOn(server, root, { user: 'hdfs' });
    await su.setOwner('own/f', { owner: 'alice', group: 'analysts' });
    await su.close();
    expect(server.stat(`${root}own/f`)).toMatchObject({ owner: 'alice', group: 'analysts' });
    expect(s.features.attrs?.owner).toBe(false);
  });

  it('maps awkward names to the right server paths, segment by segment', async () => {
    const names = ['100%', '%41', 'a+b', 'hash#tag', 'what?', 'with space', 'ü', '日本語', 'emoji😀', 'semi;colon', 'amp&eq='];
    for (const n of names) await s.put(`awk/${n}/${n}`, Buffer.from(n), { size: Buffer.byteLength(n) });
    expect(server.names(`${root}awk`)).toEqual([...names].sort(compareKeys));
    for (const n of names) {
      expect((await server.read(`${root}awk/${n}/${n}`)).toString()).toBe(n);
      expect((await readAll(await s.get(`awk/${n}/${n}`))).toString()).toBe(n);
    }
    // The query's destination decodes to the same name: '+' went out as %2B, not as a space.
    const rename = server.requests.find((r) => r.op === 'RENAME' && r.params.destination === `${root}awk/a+b/a+b`);
    expect(rename?.url).toMatch(/^\/webhdfs\/v1\/user\/ferry\/t\/awk\/a%2Bb\/\.ferry-tmp-[^/?]+\?/);
    expect(encodePath('/a b/100%/日')).toBe('/a%20b/100%25/%E6%97%A5');
    // HDFS refuses ':' in names: a fatal error, not a different file.
    await expect(s.put('awk/a:b', Buffer.from('x'), { size: 1 })).rejects.toMatchObject({ code: 'FERRY_FATAL' });
  });

  it('pages LISTSTATUS_BATCH with startAfter and skips ahead for prefixes and startAfter', async () => {
    const keys = Array.from({ length: 250 }, (_, i) => `page/k${String(i).padStart(3, '0')}`);
    for (let i = 0; i < keys.length; i += 25) await Promise.all(keys.slice(i, i + 25).map((k) => s.put(k, Buffer.from('p'), { size: 1 })));
    let from = server.requests.length;
    expect((await listAll(s, { prefix: 'page/' })).map((e) => e.key)).toEqual(keys);
    // 100 per batch: three batches, each after the last name of the one before.
    const batches = server.requests.slice(from).filter((r) => r.op === 'LISTSTATUS_BATCH');
    expect(batches.map((r) => r.params.startafter)).toEqual([undefined, 'k099', 'k199']);

    from = server.requests.length;
    expect((await listAll(s, { prefix: 'page/k24' })).map((e) => e.key)).toEqual(keys.slice(240));
    expect(server.requests.slice(from).filter((r) => r.op === 'LISTSTATUS_BATCH').map((r) => r.params.startafter)).toEqual(['k2']);

    from = server.requests.length;
    expect((await listAll(s, { prefix: 'page/', startAfter: 'page/k230' })).map((e) => e.key)).toEqual(keys.slice(231));
    expect(server.requests.slice(from).filter((r) => r.op === 'LISTSTATUS_BATCH').map((r) => r.params.startafter)).toEqual(['k23']);
    expect(countOps('LISTSTATUS', from)).toBe(0);
  });

  it('never skips what it must list when it asks the namenode to start late', () => {
    // 'a' as a directory sorts after 'a-b' ('a/' > 'a-b'): the namenode must still return 'a'.
    expect(batchStart('', 'a-b')).toBeUndefined();
    expect(batchStart('', 'ab-c/x')).toBe('a');
    expect(batchStart('', 'abc')).toBe('ab');
    expect(batchStart('te', undefined)).toBe('t');
    expect(batchStart('te', 'tf')).toBe('t');
    expect(batchStart('t', 'tzz')).toBe('tz');
    expect(batchStart('x😀', undefined)).toBe('x');
    // Against a real tree: startAfter 'a-b' must still reach the directory 'a/'.
  });

  it('lists directories before their longer siblings exactly as S3 would', async () => {
    for (const k of ['ord/a-b', 'ord/a/x', 'ord/a0', 'ord/a.txt', 'ord/a']) {
      if (k === 'ord/a') continue;
      await s.put(k, Buffer.from('1'), { size: 1 });
    }
    const all = (await listAll(s, { prefix: 'ord/' })).map((e) => e.key);
    expect(all).toEqual(['ord/a-b', 'ord/a.txt', 'ord/a/', 'ord/a/x', 'ord/a0']);
    expect((await listAll(s, { prefix: 'ord/', startAfter: 'ord/a-b' })).map((e) => e.key)).toEqual(['ord/a.txt', 'ord/a/', 'ord/a/x', 'ord/a0']);
    expect((await listAll(s, { prefix: 'ord/', startAfter: 'ord/a.txt' })).map((e) => e.key)).toEqual(['ord/a/', 'ord/a/x', 'ord/a0']);
    expect((await listAll(s, { prefix: 'ord/', startAfter: 'ord/a/' })).map((e) => e.key)).toEqual(['ord/a/x', 'ord/a0']);
    expect((await listAll(s, { prefix: 'ord/a' })).map((e) => e.key)).toEqual(all);
    expect((await listAll(s, { prefix: 'ord/a/' })).map((e) => e.key)).toEqual(['ord/a/x']);
    expect(await listAll(s, { prefix: 'ord/a-b/' })).toEqual([]);
    expect(await listAll(s, { prefix: 'nothing/here/' })).toEqual([]);
  });

  it('works with stream.pipeline in both directions (no "Premature close")', async () => {
    const data = Buffer.alloc(3 << 20, 3);
    await s.put('pipe/src', data, { size: data.length });
    const chunks: Buffer[] = [];
    await pipeline(
      await s.get('pipe/src'),
      new Writable({
        write(c: Buffer, _e, cb) {
          chunks.push(c);
          cb();
        },
      }),
    );
    // (Buffer.equals: vitest's deep equality takes seconds on megabytes.)
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
    // HDFS to HDFS: a get() stream straight into put().
    const through = new PassThrough();
    const copying = s.put('pipe/dst', through, { size: data.length });
    await Promise.all([copying, s.get('pipe/src').then((src) => pipeline(src, through))]);
    expect((await server.read(`${root}pipe/dst`)).equals(data)).toBe(true);
    // Destroying a read early releases it without an error.
    const early = await s.get('pipe/src');
    early.destroy();
    await new Promise((r) => early.once('close', r));
  });

  it('falls back to LISTSTATUS and GETFILESTATUS on namenodes without the newer ops', async () => {
    const old = await startServer({ listStatusBatch: false, fileLinkStatus: false });
    const st = storeOn(old, `${HOME}/old/`);
    try {
      for (const k of ['x/1', 'x/2', 'y']) await st.put(k, Buffer.from(k), { size: k.length });
      expect((await listAll(st)).map((e) => e.key)).toEqual(['x/', 'x/1', 'x/2', 'y']);
      expect((await listAll(st, { startAfter: 'x/1' })).map((e) => e.key)).toEqual(['x/2', 'y']);
      expect((await st.head('y')).size).toBe(1);
      expect((await st.head('x/')).isDir).toBe(true);
      // Each unknown op is asked once, then avoided.
      expect(old.ops.get('LISTSTATUS_BATCH')).toBe(1);
      expect(old.ops.get('GETFILELINKSTATUS')).toBe(1);
      expect(old.ops.get('LISTSTATUS')).toBeGreaterThanOrEqual(3);
    } finally {
      await st.close();
      await old.stop();
    }
  });

  it('refuses a listing that is not in byte order instead of skipping names', async () => {
    const odd = await startServer({ unsortedListings: true });
    const st = storeOn(odd, `${HOME}/odd/`);
    try {
      for (const k of ['a', 'b']) await st.put(k, Buffer.from(k), { size: 1 });
      const err = (await listAll(st).catch((e: unknown) => e)) as Error;
      expect(err).toMatchObject({ code: 'FERRY_LIST_ORDER' });
      expect(err.message).toContain('"a" came after "b"');
    } finally {
      await st.close();
      await odd.stop();
    }
  });

  it('makes symlinks only where the namenode allows them, with absolute targets', async () => {
    expect(s.features.symlinks).toBe(false);
    await expect(s.symlink('ln/l', '/user/ferry/t/flow/obj')).rejects.toMatchObject({ code: 'FERRY_FATAL', message: expect.stringContaining('Symlinks not supported') });

    const linky = await startServer({ symlinks: true });
    const st = storeOn(linky, `${HOME}/ln/`, { symlinks: true });
    try {
      expect(st.features.symlinks).toBe(true);
      await st.put('dir/f', Buffer.from('hello'), { size: 5 });
      await st.symlink('links/to-f', `${HOME}/ln/dir/f`);
      await st.symlink('links/to-dir', `${HOME}/ln/dir`);
      await st.symlink('links/broken', `${HOME}/ln/none`);
      await expect(st.symlink('links/rel', '../dir/f')).rejects.toMatchObject({ code: 'FERRY_FATAL' });
      expect(await st.head('links/to-f')).toMatchObject({ isSymlink: true, target: `${HOME}/ln/dir/f` });
      expect(await st.head('links/to-f', { followSymlinks: true })).toMatchObject({ size: 5, isDir: false });
      expect((await listAll(st, { prefix: 'links/' })).map((e) => [e.key, e.isSymlink, e.target])).toEqual([
        ['links/broken', true, `${HOME}/ln/none`],
        ['links/to-dir', true, `${HOME}/ln/dir`],
        ['links/to-f', true, `${HOME}/ln/dir/f`],
      ]);
      const followed = await listAll(st, { prefix: 'links/', followSymlinks: true });
      expect(followed.map((e) => [e.key, e.isDir, e.size, e.isSymlink ?? false])).toEqual([
        ['links/broken', false, 0, true],
        ['links/to-dir/', true, 0, false],
        ['links/to-dir/f', false, 5, false],
        ['links/to-f', false, 5, false],
      ]);
      expect((await readAll(await st.get('links/to-f'))).toString()).toBe('hello');
    } finally {
      await st.close();
      await linky.stop();
    }
  });

  it('says FERRY_TRANSIENT naming host:port when the namenode or a datanode refuses connections, and does not crash', async () => {
    const port = await new Promise<number>((resolve) => {
      const srv = createServer();
      srv.listen(0, '127.0.0.1', () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(p));
      });
    });
    const dead = new HdfsStore({ host: '127.0.0.1', port, user: 'ferry', root: '/x/' });
    for (const attempt of [
      () => dead.head('a'),
      () => listAll(dead),
      () => dead.get('a'),
      () => dead.put('a', Readable.from([Buffer.from('abc')]), { size: 3 }),
      () => dead.delete('a'),
    ]) {
      const err = await attempt().then(
        () => undefined,
        (e: unknown) => e as Error & { code?: string },
      );
      expect(err?.code).toBe('FERRY_TRANSIENT');
      expect(err?.message).toContain(`127.0.0.1:${port}`);
      expect(err?.message).toContain('ECONNREFUSED');
    }
    await dead.close();

    // A datanode that refuses: the namenode answers, the redirect target does not.
    const half = await startServer();
    const st = storeOn(half, `${HOME}/half/`);
    try {
      await half.stopDatanode();
      for (const attempt of [
        () => st.put('a', Buffer.from('abc'), { size: 3 }),
        () => st.put('b', Readable.from([Buffer.from('abc')]), { size: 3 }),
        () => st.put('c', Readable.from([Buffer.from('abc')])),
      ]) {
        const err = (await attempt().catch((e: unknown) => e)) as Error & { code?: string };
        expect(err?.code).toBe('FERRY_TRANSIENT');
        expect(err?.message).toContain(`datanode 127.0.0.1:${half.datanodePort}`);
      }
      // No temporary is left (the directory was made before the bytes were sent).
      expect(half.names(`${HOME}/half`)).toEqual([]);
    } finally {
      await st.close();
      await half.stop();
    }
  });
});

// The cases of the shared suite that plant things in the tree, here through the test server.
describe('hdfs store safety', () => {
  let server: WebHdfsServer;
  let n = 0;
  const stores: HdfsStore[] = [];
  beforeAll(async () => {
    // Links enabled (Hadoop's test-only switch), so that the link cases can be set up at all.
    server = await startServer({ symlinks: true });
  });
  afterAll(async () => {
    for (const st of stores) await st.close();
    await server?.stop();
  });

  /** A fresh destination root `.../dst/` beside an `outside/` directory holding `victim`. */
  async function fresh(extra: Partial<ConstructorParameters<typeof HdfsStore>[0]> = {}): Promise<{ root: string; outside: string; store: HdfsStore }> {
    const top = `${HOME}/safety${n++}`;
    const outside = `${top}/outside`;
    const helper = storeOn(server, `${top}/`);
    stores.push(helper);
    await helper.put('outside/victim', Buffer.from('outside content'), { size: 15 });
    await helper.mkdir('dst/');
    const store = storeOn(server, `${top}/dst/`, extra);
    stores.push(store);
    return { root: `${top}/dst`, outside, store };
  }

  // A key with '..' from an object store would have written outside the destination.
  it('refuses keys that leave the root, naming the key and the reason, before any request', async () => {
    const { root, outside, store } = await fresh();
    const from = server.requests.length;
    for (const key of ['../outside/victim', '/abs', 'a//b', 'a/./b', 'a/../../x']) {
      const err = (await store.put(key, Buffer.from('x'), { size: 1 }).catch((e: unknown) => e)) as Error;
      expect(err, key).toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
      expect(err.message).toContain(JSON.stringify(key));
    }
    for (const attempt of [
      () => store.head('../outside/victim'),
      () => store.get('../outside/victim'),
      () => store.delete('../outside/victim'),
      () => store.mkdir('../made/'),
      () => store.symlink('../l', '/x'),
      () => store.setAttrs('../outside/victim', { mtime: 0 }),
      () => store.setOwner('../outside/victim', { group: 'staff' }),
      () => listAll(store, { prefix: '../outside/' }),
    ])
      await expect(attempt()).rejects.toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
    expect(server.requests.length).toBe(from);
    expect((await server.read(`${outside}/victim`)).toString()).toBe('outside content');
    expect(server.names(root)).toEqual([]);
  });

  // A name that changed type on the source (dir ↔ file) made every later sync fail on that key.
  it('replaces an empty directory or a file that stands in the way, and refuses a directory with content', async () => {
    const { root, store } = await fresh();
    await store.mkdir('empty/');
    await store.put('empty', Buffer.from('file now'), { size: 8 });
    expect(server.stat(`${root}/empty`)?.type).toBe('FILE');
    expect((await server.read(`${root}/empty`)).toString()).toBe('file now');

    await store.put('full/child', Buffer.from('keep me'), { size: 7 });
    const err = (await store.put('full', Buffer.from('x'), { size: 1 }).catch((e: unknown) => e)) as Error;
    expect(err).toMatchObject({ code: 'FERRY_IN_THE_WAY' });
    expect(err.message).toContain('"full"');
    expect((await server.read(`${root}/full/child`)).toString()).toBe('keep me');
    expect(server.names(root)).toEqual(['empty', 'full']);

    // A file where a directory must go is replaced by the directory.
    await store.put('was-file', Buffer.from('old'), { size: 3 });
    await store.put('was-file/inner/x', Buffer.from('nested'), { size: 6 });
    expect((await server.read(`${root}/was-file/inner/x`)).toString()).toBe('nested');
    await store.put('mk', Buffer.from('old'), { size: 3 });
    await store.mkdir('mk/');
    expect(server.stat(`${root}/mk`)?.type).toBe('DIRECTORY');

    // In place, too.
    const inplace = storeOn(server, `${root}/`, { inplace: true });
    stores.push(inplace);
    await store.mkdir('empty2/');
    await inplace.put('empty2', Buffer.from('in place'), { size: 8 });
    expect((await server.read(`${root}/empty2`)).toString()).toBe('in place');
    await expect(inplace.put('full', Buffer.from('x'), { size: 1 })).rejects.toMatchObject({ code: 'FERRY_IN_THE_WAY' });

    // Deleting a file key whose name is a directory now (or the reverse) succeeds and removes nothing.
    await store.mkdir('dir-now/');
    await store.delete('dir-now');
    expect(server.stat(`${root}/dir-now`)?.type).toBe('DIRECTORY');
    await store.put('file-now', Buffer.from('f'), { size: 1 });
    await store.delete('file-now/');
    expect(server.stat(`${root}/file-now`)?.type).toBe('FILE');
  });

  // A link inside the destination pointing elsewhere must never carry a write, a chmod or a delete there.
  it('never writes, changes or deletes through a symlink below the root', async () => {
    const { root, outside, store } = await fresh({ symlinks: true });
    await store.symlink('ln', outside);
    await store.symlink('lnfile', `${outside}/victim`);
    const before = server.stat(`${outside}/victim`)!;
    for (const [what, attempt] of [
      ['put', () => store.put('ln/victim', Buffer.from('overwritten'), { size: 11 })],
      ['put deeper', () => store.put('ln/sub/new', Buffer.from('x'), { size: 1 })],
      ['mkdir', () => store.mkdir('ln/newdir/')],
      ['mkdir on the link', () => store.mkdir('lnfile/')],
      ['setAttrs', () => store.setAttrs('lnfile', { mode: 0o600, mtime: 0 })],
    ] as const) {
      const err = (await attempt().catch((e: unknown) => e)) as Error;
      expect(err, what).toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
      expect(err.message, what).toContain('is a symlink');
    }
    const inplace = storeOn(server, `${root}/`, { inplace: true, symlinks: true });
    stores.push(inplace);
    await expect(inplace.put('lnfile', Buffer.from('through'), { size: 7 })).rejects.toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
    // delete() of something under the link finds nothing there (the namenode does not resolve it).
    await store.delete('ln/victim');
    expect(server.names(outside)).toEqual(['victim']);
    expect(server.stat(`${outside}/victim`)).toEqual(before);
    expect((await server.read(`${outside}/victim`)).toString()).toBe('outside content');
    // A plain write replaces the link; deleting a link removes the link only.
    await store.put('lnfile', Buffer.from('a file now'), { size: 10 });
    expect(server.stat(`${root}/lnfile`)?.type).toBe('FILE');
    await store.delete('ln');
    expect(server.stat(`${root}/ln`)).toBeUndefined();
    expect((await server.read(`${outside}/victim`)).toString()).toBe('outside content');
  });

  // SETTIMES reads -1 as "leave unchanged": an mtime of 1969-12-31T23:59:59.999Z was silently dropped.
  it('writes mtimes outside the settable range clamped to it, and declares the range', async () => {
    const { root, store } = await fresh();
    expect(store.features.attrs?.mtimeRange).toEqual({ min: 0, max: 8.64e15 });
    await store.put('minus-one', Buffer.from('x'), { size: 1, mtime: -1 });
    await store.put('old', Buffer.from('x'), { size: 1, mtime: Date.UTC(1960, 0, 1) });
    await store.put('future', Buffer.from('x'), { size: 1, mtime: Date.UTC(2200, 0, 1) });
    expect(server.stat(`${root}/minus-one`)?.mtime).toBe(0);
    expect(server.stat(`${root}/old`)?.mtime).toBe(0);
    expect(server.stat(`${root}/future`)?.mtime).toBe(Date.UTC(2200, 0, 1));
    await store.setAttrs('future', { mtime: 9e15 });
    expect((await store.head('future')).mtime).toBe(8.64e15);
    await store.setAttrs('future', { mtime: -5 });
    expect(server.stat(`${root}/future`)?.mtime).toBe(0);
  });

  // Temporaries of killed runs piled up forever; a live concurrent run's must never be taken.
  it('names temporaries after their writer and reclaims only those whose writer is gone', async () => {
    const { root, store } = await fresh();
    const from = server.requests.length;
    await store.put('tmp/keep', Buffer.from('kept'), { size: 4 });
    const create = server.requests.slice(from).find((r) => r.op === 'CREATE')!;
    expect(create.path.startsWith(`${root}/tmp/${tempNamePrefix()}`)).toBe(true);

    const child = spawn(process.execPath, ['-e', '0']);
    await once(child, 'exit');
    const host = tempNamePrefix().slice(TEMP_PREFIX.length).split('_')[0]!;
    const dead = `${TEMP_PREFIX}${host}_${child.pid!.toString(36)}_0badc0de_0123456789`;
    const live = tempName();
    const foreignOld = `${TEMP_PREFIX}otherhost_1_0000cafe_0000000001`;
    const foreignNew = `${TEMP_PREFIX}otherhost_1_0000cafe_0000000002`;
    for (const name of [dead, live, foreignOld, foreignNew]) await store.client.create(`${root}/tmp/${name}`, Buffer.from(`partial ${name}`));
    await store.client.setTimes(`${root}/tmp/${foreignOld}`, { mtime: Date.now() - 48 * 3600 * 1000 });

    expect((await listAll(store, { prefix: 'tmp/' })).map((e) => e.key)).toEqual(['tmp/keep']);
    expect(server.names(`${root}/tmp`).length).toBe(5);
    const reclaimed: [string, number][] = [];
    expect((await listAll(store, { prefix: 'tmp/', reclaim: (p, b) => reclaimed.push([p, b]) })).map((e) => e.key)).toEqual(['tmp/keep']);
    expect(reclaimed.sort()).toEqual([dead, foreignOld].map((name) => [`${store.description}tmp/${name}`, Buffer.byteLength(`partial ${name}`)] as [string, number]).sort());
    expect(server.names(`${root}/tmp`)).toEqual(['keep', foreignNew, live].sort(compareKeys));
  });

  // hdfs://nn:port meant the filesystem's root '/', where a --delete-dst would have emptied the cluster.
  it('roots an address without a path at the user\'s home (GETHOMEDIRECTORY)', async () => {
    const a = parseAddress(`hdfs://ferry@127.0.0.1:${server.namenodePort}`);
    expect(a).toMatchObject({ bucket: '', prefix: '' });
    const st = await hdfsBackend.open(a, {});
    try {
      expect(st.description).toBe(`hdfs://ferry@127.0.0.1:${server.namenodePort}${HOME}/`);
      await st.put('at-home', Buffer.from('home'), { size: 4 });
      expect((await server.read(`${HOME}/at-home`)).toString()).toBe('home');
    } finally {
      await st.close?.();
    }
    // An explicit '/' is the root, as asked.
    expect(parseAddress(`hdfs://ferry@127.0.0.1:${server.namenodePort}/`)).toMatchObject({ bucket: '/' });
  });
});
