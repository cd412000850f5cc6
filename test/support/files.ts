import { chownSync, lstatSync, readdirSync } from 'node:fs';
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
