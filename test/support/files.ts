import { chownSync, lstatSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Give `root` and everything under it (symlinks not followed) to user and group `uid`. */
export function chownTree(root: string, uid: number): void {
  chownSync(root, uid, uid);
  for (const name of readdirSync(root)) {
    const p = join(root, name);
    if (lstatSync(p).isDirectory()) chownTree(p, uid);
    else chownSync(p, uid, uid);
  }
}

/** The spill directories in os.tmpdir() of process `pid`'s listings (file/pool.ts FsPool.readDir). */
export function spillsOf(pid = process.pid): string[] {
  return readdirSync(tmpdir()).filter((n) => n.startsWith(`ferry-list-${pid}-`));
}
