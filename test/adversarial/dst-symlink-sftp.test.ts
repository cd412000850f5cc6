/**
 * dst-symlink-lines.test.ts on an SFTP destination: a --files-from line or --start must not look
 * DST's keys up through a symlinked directory there either (the server's LSTAT follows every
 * component but the last), or --delete-src deletes sources whose only "copy" is outside DST.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runSync } from '../../src/manager/sync/run.js';
import { parseAddress } from '../../src/shared/storage/address.js';
import { FileStore } from '../../src/shared/storage/file/index.js';
import { openSftp } from '../../src/shared/storage/sftp/index.js';
import type { ObjectStore } from '../../src/shared/storage/types.js';
import { sshdMissing, startSshd, writeClientFiles, type Sshd } from '../support/sshd.js';
import { QUIET, SYNC_OPTIONS } from '../support/options.js';

let sshd: Sshd | undefined;
const open: ObjectStore[] = [];
afterAll(async () => {
  for (const s of open) await s.close?.();
  await sshd?.cleanup();
});

describe.skipIf(sshdMissing !== undefined)('sftp destination with a symlinked directory', () => {
  for (const how of ['files-from d/', 'files-from d/f', 'start d/f'] as const) {
    it(`${how} --delete-src keeps the source file whose only "copy" is outside DST`, async () => {
      sshd ??= await startSshd();
      const client = await writeClientFiles(sshd);
      const root = await fsp.mkdtemp(join(sshd.dir, 'dstlink-'));
      const src = join(root, 'src');
      await fsp.mkdir(join(src, 'd'), { recursive: true });
      await fsp.mkdir(join(root, 'dst'));
      await fsp.mkdir(join(root, 'elsewhere'));
      await fsp.writeFile(join(src, 'd', 'f'), 'precious');
      await fsp.copyFile(join(src, 'd', 'f'), join(root, 'elsewhere', 'f'));
      const st = await fsp.stat(join(src, 'd', 'f'));
      await fsp.utimes(join(root, 'elsewhere', 'f'), st.atime, st.mtime);
      await fsp.symlink('../elsewhere', join(root, 'dst', 'd'));
      await fsp.writeFile(join(root, 'list'), how === 'files-from d/' ? 'd/\n' : 'd/f\n');
      const s = new FileStore(src + '/');
      const d = await openSftp(parseAddress(`sftp://${sshd.user}@127.0.0.1:${sshd.port}${join(root, 'dst')}/`), { ssh: client.sshOptions });
      open.push(s, d);
      const extra = how === 'start d/f' ? { start: 'd/f' } : { filesFrom: join(root, 'list') };
      const r = await runSync(s, d, { ...SYNC_OPTIONS, deleteSrc: true, ...extra }, { stopListing: new AbortController().signal, stopNow: new AbortController().signal, logger: QUIET });
      expect(await fsp.readFile(join(src, 'd', 'f'), 'utf8')).toBe('precious');
      expect(r.stats.deleted).toBe(0);
    });
  }
});
