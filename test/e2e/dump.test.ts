/**
 * `ferry dump` and `ferry load` end to end through the command line, against real stores: the local
 * disk, the mem store, SFTP (a real sshd) and S3 (the test server). Every format round-trips from
 * each store into a fresh place of the same kind: the same keys with byte-identical data, and the
 * modes, mtimes, symlinks and empty directories that store keeps. Also: a real pipe between two
 * processes, inputs that are truncated or corrupt (refused, nothing written), the restore drill,
 * --data, and the secrets of the source address, which never reach the dump.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultRegistry } from '../../src/shared/storage/all.js';
import { MemSpace } from '../../src/shared/storage/mem.js';
import type { BackendRegistry } from '../../src/shared/storage/registry.js';
import { openSftp } from '../../src/shared/storage/sftp/index.js';
import type { ObjectStore } from '../../src/shared/storage/types.js';
import { startS3Server, type S3TestServer } from '../support/s3-server.js';
import { sshdMissing, startSshd, warnIfSshdMissing, writeClientFiles, type Sshd } from '../support/sshd.js';
import { ferry as runFerry } from '../manager/cli-harness.js';
import { FerryProcesses, until } from '../support/ferry-process.js';

const FERRY = join(__dirname, '..', '..', 'bin', 'ferry.js');
/** Credentials of the S3 test server that must never appear in a dump or a message. */
const AK = 'AKIDDUMPTEST';
const SK = 'dump-s3cret-Value-42';

let work: string;
let s3: S3TestServer;
let sshd: Sshd | undefined;
let registry: BackendRegistry;
let seq = 0;

const ferry = (...args: string[]) => runFerry(args, { registry });
const processes = new FerryProcesses();

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'ferry-dump-e2e-'));
  s3 = await startS3Server({ credentials: { [AK]: SK } });
  await s3.createBucket('dumps');
  registry = defaultRegistry({ mem: new MemSpace() });
  if (!sshdMissing) {
    sshd = await startSshd();
    const client = await writeClientFiles(sshd, { knownHosts: [] });
    registry.register({ scheme: 'sftp', summary: 'sftp (test sshd)', open: async (a, o) => openSftp(a, { ...o, ssh: client.sshOptions }) });
  } else warnIfSshdMissing();
}, 120_000);

afterAll(async () => {
  await Promise.allSettled([s3?.close(), sshd?.cleanup()]);
  rmSync(work, { recursive: true, force: true });
});

function fresh(name: string): string {
  const d = join(work, `${name}-${++seq}`);
  mkdirSync(d, { recursive: true });
  return d;
}

interface Kind {
  name: string;
  /** A fresh, empty place of this kind. */
  place(): string;
  keepsAttrs: boolean;
  keepsLinks: boolean;
}

function kinds(): Kind[] {
  const out: Kind[] = [
    { name: 'file', place: () => fresh('file') + '/', keepsAttrs: true, keepsLinks: true },
    { name: 'mem', place: () => `mem://m${++seq}/`, keepsAttrs: true, keepsLinks: true },
    { name: 's3', place: () => `s3://${AK}:${SK}@${s3.endpoint}/dumps/t${++seq}/`, keepsAttrs: false, keepsLinks: false },
  ];
  if (!sshdMissing) out.push({ name: 'sftp', place: () => `sftp://${sshd!.user}@127.0.0.1:${sshd!.port}${fresh('sftp')}/`, keepsAttrs: true, keepsLinks: true });
  return out;
}

const T0 = 1_700_000_000_000;
/** The tree every round trip starts from: names that need care, an empty file, a file over one read-ahead, an empty directory, a symlink. */
const FILES: Record<string, Buffer> = {
  'docs/read me.txt': Buffer.from('hello'),
  'docs/日本語.md': Buffer.from('こんにちは'),
  'docs/empty-file': Buffer.alloc(0),
  'a-b': Buffer.from('sorts before a/'),
  'a/deep/er/x.bin': Buffer.alloc(5 << 20, 9),
  'top 100%': Buffer.from('percent'),
};

async function open(addr: string): Promise<ObjectStore> {
  return registry.open(addr);
}

async function populate(kind: Kind, addr: string): Promise<void> {
  const s = await open(addr);
  try {
    let i = 0;
    for (const [k, v] of Object.entries(FILES)) await s.put(k, v, { size: v.length, mtime: T0 + ++i * 1000, mode: 0o640 });
    if (s.features.dirs && s.mkdir) await s.mkdir('docs/empty-dir');
    else await s.put('docs/empty-dir/', Buffer.alloc(0), { size: 0 });
    if (kind.keepsLinks) await s.symlink!('docs/link', 'read me.txt');
    if (s.setAttrs && s.features.attrs?.mtime) {
      await s.setAttrs('docs/empty-dir/', { mtime: T0 + 50_000, mode: 0o750 });
      if (kind.keepsLinks) await s.setAttrs('docs/link', { mtime: T0 + 60_000 }, { isSymlink: true });
      if (s.features.dirs) await s.setAttrs('docs/', { mtime: T0 + 70_000, mode: 0o755 });
    }
  } finally {
    await s.close?.();
  }
}

/** What a store holds: each key with its content hash, and the attributes the kind keeps. */
async function contents(kind: Kind, addr: string): Promise<Record<string, string>> {
  const s = await open(addr);
  const out: Record<string, string> = {};
  try {
    for await (const page of s.list({ followSymlinks: false })) {
      for (const e of page) {
        let v: string;
        if (e.isSymlink) v = `link ${e.target}`;
        else if (e.isDir) v = 'dir';
        else {
          const h = createHash('sha256');
          for await (const c of await s.get(e.key)) h.update(c as Buffer);
          v = `${e.size} ${h.digest('hex').slice(0, 16)}`;
        }
        // Directories' and links' modes differ by platform defaults; their mtimes are what must come back.
        if (kind.keepsAttrs) v += ` mtime=${Math.floor(e.mtime / 1000)}` + (e.isDir || e.isSymlink ? '' : ` mode=${(e.mode ?? 0).toString(8)}`);
        if (kind.keepsAttrs && e.isDir && e.key !== '' && e.key.includes('empty-dir')) v += ` mode=${(e.mode ?? 0).toString(8)}`;
        out[e.key] = v;
      }
    }
  } finally {
    await s.close?.();
  }
  return out;
}

describe('ferry dump | ferry load round trips', () => {
  for (const kind of kinds()) {
    describe(`from ${kind.name}`, () => {
      for (const format of ['json', 'json.gz', 'tar', 'tar.gz', 'zip'] as const) {
        it(`${format}: same keys, bytes${kind.keepsAttrs ? ', modes, mtimes' : ''}${kind.keepsLinks ? ', symlinks' : ''} and the empty directory`, async () => {
          const src = kind.place();
          await populate(kind, src);
          const want = await contents(kind, src);
          expect(Object.keys(want)).toContain(kind.name === 's3' || kind.name === 'mem' ? 'docs/empty-dir/' : 'docs/empty-dir/');
          const out = join(fresh('out'), `dump.${format}`);
          const d = await ferry('dump', '-q', src, out);
          expect(d.stderr).toBe('');
          expect(d.code).toBe(0);
          const dst = kind.place();
          const isJson = format.startsWith('json');
          const l = await ferry('load', '--json', dst, out, ...(isJson ? ['--data', src] : []));
          expect(l.stderr, l.stderr).not.toMatch(/error/);
          expect(l.code).toBe(0);
          const files = Object.keys(FILES).length;
          if (isJson) expect(l.json).toMatchObject({ missing: files, restored: files, unrestored: 0, failed: 0 });
          else expect(l.json).toMatchObject({ files, failed: 0 });
          expect(await contents(kind, dst)).toEqual(want);
        });
      }
    });
  }
});

describe('ferry dump and load on the command line', () => {
  it('dump | load through a real pipe between two processes, then --data fills in the files', async () => {
    const src = fresh('pipe-src');
    for (const [k, v] of Object.entries(FILES)) {
      mkdirSync(join(src, k, '..'), { recursive: true });
      writeFileSync(join(src, k), v);
    }
    mkdirSync(join(src, 'docs/empty-dir'));
    const dst = fresh('pipe-dst');
    const env = { PATH: process.env['PATH'] ?? '' };
    const dump = spawn(process.execPath, [FERRY, 'dump', src], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const load = spawn(process.execPath, [FERRY, 'load', '--json', '--data', src, dst], { env, stdio: [dump.stdout, 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    load.stdout!.on('data', (c) => (out += c));
    load.stderr!.on('data', (c) => (err += c));
    // 'exit', not 'close': this process holds its end of the dump's stdout unread, so it never closes here.
    const [dc, lc] = await Promise.all([new Promise((r) => dump.on('exit', r)), new Promise((r) => load.on('close', r))]);
    dump.stdout!.destroy();
    expect(dc).toBe(0);
    expect(lc, err).toBe(0);
    const summary = JSON.parse(out.trim().split('\n').pop()!);
    expect(summary).toMatchObject({ format: 'json', restored: Object.keys(FILES).length, unrestored: 0 });
    for (const [k, v] of Object.entries(FILES)) expect(readFileSync(join(dst, k)).equals(v), k).toBe(true);
    expect(readdirSync(join(dst, 'docs/empty-dir'))).toEqual([]);
  });

  it('refuses truncated or corrupt .json, .json.gz, .tar and .zip inputs with FERRY_INVALID_DUMP and writes nothing', async () => {
    const src = fresh('bad-src');
    for (const [k, v] of Object.entries(FILES)) {
      mkdirSync(join(src, k, '..'), { recursive: true });
      writeFileSync(join(src, k), v);
    }
    const dir = fresh('bad');
    for (const format of ['json', 'json.gz', 'tar', 'zip'] as const) {
      const good = join(dir, `good.${format}`);
      expect((await ferry('dump', '-q', src + '/', good)).code).toBe(0);
      const data = readFileSync(good);
      const broken: Record<string, Buffer> = {
        truncated: data.subarray(0, Math.floor(data.length * 0.7)),
        corrupt: Buffer.from(data),
      };
      // Flip bytes: in the middle of a gzip or zip stream (their CRCs catch it), in a tar's first
      // header (a tar has no checksum of the data, only of each header).
      const c = broken['corrupt']!;
      const at = format === 'tar' ? 0 : Math.floor(c.length / 2);
      for (let i = at; i < at + 8; i++) c[i] = c[i]! ^ 0x5a;
      if (format === 'json') broken['corrupt'] = Buffer.from(data.toString().replace('"type":"file"', '"type":"door"'));
      for (const [what, bytes] of Object.entries(broken)) {
        const file = join(dir, `${what}.${format}`);
        writeFileSync(file, bytes);
        const dst = fresh('bad-dst');
        const r = await ferry('load', '--data', src + '/', dst + '/', file);
        expect(r.code, `${what} ${format}: ${r.stderr}`).toBe(1);
        expect(r.stderr, `${what} ${format}`).toMatch(/FERRY_INVALID_DUMP/);
        expect(readdirSync(dst), `${what} ${format}`).toEqual([]);
      }
    }
  });

  it('--verify finds a missing, a truncated and a changed file, writes nothing, and exits 1; --data restores exactly those', async () => {
    const src = fresh('drill-src');
    for (const [k, v] of Object.entries(FILES)) {
      mkdirSync(join(src, k, '..'), { recursive: true });
      writeFileSync(join(src, k), v);
    }
    const dumpFile = join(fresh('drill'), 'meta.json.gz');
    expect((await ferry('dump', '-q', '--hash', 'sha256', src + '/', dumpFile)).code).toBe(0);
    const dst = fresh('drill-dst');
    expect((await ferry('load', '-q', '--data', src + '/', dst + '/', dumpFile)).code).toBe(0);
    rmSync(join(dst, 'docs/read me.txt'));
    writeFileSync(join(dst, 'a/deep/er/x.bin'), Buffer.alloc(100));
    writeFileSync(join(dst, 'docs/日本語.md'), Buffer.from('さようなら!'.padEnd(5, '!')).subarray(0, FILES['docs/日本語.md']!.length));
    const before = readdirSync(dst, { recursive: true }).sort();
    const drill = await ferry('load', '--verify', '--json', dst + '/', dumpFile);
    expect(drill.code).toBe(1);
    expect(drill.json).toMatchObject({ missing: 1, different: 2, unrestored: 3, files: 0, dirs: 0 });
    expect(drill.stderr).toMatch(/missing: docs\/read me\.txt/);
    expect(drill.stderr).toMatch(/a\/deep\/er\/x\.bin/);
    expect(drill.stderr).toMatch(/sha256/);
    expect(readdirSync(dst, { recursive: true }).sort()).toEqual(before);
    expect(readFileSync(join(dst, 'a/deep/er/x.bin')).length).toBe(100);
    const restore = await ferry('load', '--json', '--data', src + '/', dst + '/', dumpFile);
    expect(restore.code).toBe(0);
    expect(restore.json).toMatchObject({ missing: 1, different: 2, restored: 3, restoredBytes: 5 + (5 << 20) + FILES['docs/日本語.md']!.length, present: 3, unrestored: 0 });
    for (const [k, v] of Object.entries(FILES)) expect(readFileSync(join(dst, k)).equals(v), k).toBe(true);
  });

  it('writes no secret into a dump, whatever the format, and says none in its messages', async () => {
    const src = `s3://${AK}:${SK}@${s3.endpoint}/dumps/secret-src/`;
    await populate({ name: 's3', place: () => src, keepsAttrs: false, keepsLinks: false }, src);
    const toStdout = await ferry('dump', '-v', src);
    expect(toStdout.code).toBe(0);
    expect(toStdout.stdout).toContain('"format":"ferry-dump/1"');
    expect(toStdout.stdout).toContain(`"source":"s3://removed:removed@${s3.endpoint}/dumps/secret-src/"`);
    expect(toStdout.stdout).not.toContain(SK);
    expect(toStdout.stdout).not.toContain(AK);
    // Messages name the access key, as sync's do (it is no secret); never the secret key.
    expect(toStdout.stderr).not.toContain(SK);
    // Straight into the bucket, and back from it (IN may be any address).
    const inBucket = `s3://${AK}:${SK}@${s3.endpoint}/dumps/backups/meta.json.gz`;
    const d = await ferry('dump', src, inBucket);
    expect(d.code).toBe(0);
    expect(d.stderr).not.toContain(SK);
    const stored = readFileSync(join(s3.directory, 'dumps', 'backups', 'meta.json.gz._S3rver_object'));
    const text = gunzipSync(stored).toString();
    expect(text).toContain('ferry-dump/1');
    expect(text).not.toContain(SK);
    expect(text).not.toContain(AK);
    const dst = fresh('from-bucket');
    const l = await ferry('load', '--json', '--data', src, dst + '/', inBucket);
    expect(l.code, l.stderr).toBe(0);
    expect(l.json).toMatchObject({ restored: Object.keys(FILES).length });
    expect(l.stdout + l.stderr).not.toContain(SK);
  });

  it('refuses an archive into a non-empty destination without --force, writing nothing; --force merges', async () => {
    const src = fresh('force-src');
    writeFileSync(join(src, 'new.txt'), 'new');
    const out = join(fresh('force'), 'a.tar');
    expect((await ferry('dump', '-q', src + '/', out)).code).toBe(0);
    const dst = fresh('force-dst');
    writeFileSync(join(dst, 'old.txt'), 'old');
    const refused = await ferry('load', dst + '/', out);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/not empty.*--force/);
    expect(existsSync(join(dst, 'new.txt'))).toBe(false);
    const merged = await ferry('load', '--force', dst + '/', out);
    expect(merged.code).toBe(0);
    expect(readdirSync(dst).sort()).toEqual(['new.txt', 'old.txt']);
  });

  // A load into an empty directory creates its files in place (no temporary, no rename): killed
  // with SIGKILL, it may leave a file cut short. What it left must not pass for a restore.
  it('a load killed with SIGKILL leaves its marker: the next load refuses without --force, and --force restores every file', async () => {
    const src = fresh('killed-src');
    const files = 40_000;
    for (let d = 0; d < 40; d++) {
      mkdirSync(join(src, `d${d}`));
      for (let f = 0; f < files / 40; f++) writeFileSync(join(src, `d${d}/f${f}`), `${d}/${f} `.repeat(1 + (f % 5)));
    }
    const tar = join(fresh('killed'), 'a.tar');
    expect((await ferry('dump', '-q', src + '/', tar)).code).toBe(0);
    const dst = fresh('killed-dst');
    const p = processes.spawn(['load', '-q', dst + '/', tar]);
    try {
      await until('the load to write files', () => existsSync(join(dst, '.ferry/load-incomplete')) && existsSync(join(dst, 'd0/f0')), 60_000);
      p.child.kill('SIGKILL');
      await p.done;
    } finally {
      processes.killAll();
    }
    expect(existsSync(join(dst, '.ferry/load-incomplete'))).toBe(true);
    const refused = await ferry('load', dst + '/', tar);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/earlier load .* was stopped before it finished .*--force/);
    const again = await ferry('load', '-q', '--force', dst + '/', tar);
    expect(again.code, again.stderr).toBe(0);
    expect(existsSync(join(dst, '.ferry/load-incomplete'))).toBe(false);
    for (let d = 0; d < 40; d += 7) {
      for (let f = 0; f < files / 40; f += 13) expect(readFileSync(join(dst, `d${d}/f${f}`), 'utf8')).toBe(`${d}/${f} `.repeat(1 + (f % 5)));
    }
    expect(readdirSync(join(dst, 'd39')).length).toBe(files / 40);
  }, 120_000);

  it('a tree whose symlinks point outside it dumps whole; load refuses such links unless --outside-links, which restores them as links', async () => {
    // Regression: the archive writers refused a real tree's absolute link, and load gave no way to restore one.
    const src = fresh('links-src');
    writeFileSync(join(src, 'a.txt'), 'a');
    symlinkSync('/etc/hostname', join(src, 'abs'));
    symlinkSync('../elsewhere', join(src, 'up'));
    for (const ext of ['json', 'tar', 'zip']) {
      const out = join(fresh('links'), `t.${ext}`);
      const dumped = await ferry('dump', '-q', src + '/', out);
      expect(dumped.code, dumped.stderr).toBe(0);
      const dst = fresh('links-dst');
      const refused = await ferry('load', '-q', dst + '/', out);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/FERRY_INVALID_DUMP|outside-links/);
      expect(refused.stderr).toMatch(/--outside-links/);
      expect(readdirSync(dst)).toEqual([]);
      const loaded = await ferry('load', '-q', '--outside-links', dst + '/', out);
      if (ext === 'json') {
        // A JSON dump carries no data: the links and the tree are restored, the file is missing.
        expect(loaded.code).toBe(1);
      } else expect(loaded.code, loaded.stderr).toBe(0);
      expect(readlinkSync(join(dst, 'abs'))).toBe('/etc/hostname');
      expect(readlinkSync(join(dst, 'up'))).toBe('../elsewhere');
    }
  });

  it('names that are not valid UTF-8 round-trip byte for byte through every format', async () => {
    const src = fresh('raw-src');
    const raw = Buffer.from([0x61, 0xff, 0x62]); // a, a byte that is no UTF-8, b
    const lone = Buffer.from([0x63, 0xc3]); // c, half of a two-byte sequence
    mkdirSync(Buffer.concat([Buffer.from(src + '/'), lone]));
    writeFileSync(Buffer.concat([Buffer.from(src + '/'), lone, Buffer.from('/'), raw]), 'raw bytes');
    writeFileSync(join(src, 'plain.txt'), 'plain');
    /** Every name below `dir` as the hex of its bytes, 'dir/name' for what a sub-directory holds. */
    const names = (dir: string | Buffer, prefix = ''): string[] =>
      readdirSync(dir, { encoding: 'buffer', withFileTypes: true }).flatMap((d) => {
        const name = prefix + d.name.toString('hex');
        return d.isDirectory() ? [name, ...names(Buffer.concat([Buffer.from(dir), Buffer.from('/'), d.name]), name + '/')] : [name];
      });
    for (const ext of ['json', 'tar', 'tar.gz', 'zip']) {
      const out = join(fresh('raw'), `t.${ext}`);
      expect((await ferry('dump', '-q', src + '/', out)).code).toBe(0);
      const dst = fresh('raw-dst');
      const loaded = await ferry('load', '-q', ...(ext === 'json' ? ['--data', src + '/'] : []), dst + '/', out);
      expect(loaded.code, loaded.stderr).toBe(0);
      expect(names(dst).sort(), ext).toEqual(names(src).sort());
      expect(readFileSync(Buffer.concat([Buffer.from(dst + '/'), lone, Buffer.from('/'), raw]), 'utf8')).toBe('raw bytes');
    }
  });

  it('ferry dump A | head: the reader leaving ends the dump quietly with 141, as SIGPIPE would', async () => {
    // Regression: a dump whose standard output was closed by its reader said "ferry: error: write EPIPE" and exited 1.
    const src = fresh('pipe-src');
    for (let i = 0; i < 3000; i++) writeFileSync(join(src, `f${i}`), 'x');
    const child = spawn(process.execPath, [FERRY, 'dump', src + '/'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    await new Promise<void>((r) => child.stdout.once('data', () => r()));
    child.stdout.destroy();
    const code = await new Promise<number | null>((r) => child.on('close', r));
    expect(code).toBe(141);
    expect(err).not.toMatch(/error|EPIPE/);
  });

  it('says clearly which formats exist', async () => {
    const r = await ferry('dump', fresh('fmt') + '/', join(work, 'x.tar.xz'));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/not supported yet.*\.tar\.gz.*\.zip/);
    const u = await ferry('dump', fresh('fmt') + '/', join(work, 'x.rar'));
    expect(u.code).toBe(2);
    expect(u.stderr).toMatch(/--format/);
    // A local SRC that is not there is a mistake, not an empty namespace: no dump is written.
    const missing = await ferry('dump', join(work, 'no-such-dir'), join(work, 'never.json'));
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/does not exist.*FERRY_NOT_FOUND/);
    expect(existsSync(join(work, 'never.json'))).toBe(false);
  });
});
