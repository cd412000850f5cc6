import { realpathSync } from 'node:fs';
import { posix } from 'node:path';
import type { Address } from './address.js';

/**
 * Where an address's keys live, for telling whether two addresses overlap: `space` names one
 * namespace (a machine's disk, an SFTP host, a bucket), and `path` is the key prefix in it, with
 * '.', '..', '~' and (on the local disk) symlinks resolved. Keys of the address are exactly the
 * strings in `space` that start with `path`.
 */
export interface StorageLocation {
  space: string;
  path: string;
}

export function storageLocation(a: Address): StorageLocation {
  switch (a.scheme) {
    case 'file':
      return { space: 'file:', path: realDir(a.bucket) + a.prefix };
    case 'sftp': {
      // A relative directory is under the login's home, which differs per user.
      const dir = a.bucket.startsWith('/') && !a.bucket.startsWith('/~/') ? normalDir(a.bucket) : `~${a.user ?? ''}/` + normalDir('/' + a.bucket.replace(/^\/?~\/?/, '')).slice(1);
      return { space: `sftp:${a.host ?? a.endpoint}:${a.port ?? 22}`, path: dir + a.prefix };
    }
    case 'hdfs':
      return { space: `hdfs:${a.endpoint}`, path: normalDir(a.bucket) + a.prefix };
    default: {
      const family = a.scheme === 'minio' ? 's3' : a.scheme;
      return { space: `${family}:${a.endpoint}:${a.bucket}`, path: a.prefix };
    }
  }
}

/** Two addresses share keys: the same namespace, and one's prefix starts the other's. */
export function overlap(a: StorageLocation, b: StorageLocation): boolean {
  return a.space === b.space && (a.path.startsWith(b.path) || b.path.startsWith(a.path));
}

/** The location is the root of a file system: every file of the host is under it. */
export function isFilesystemRoot(l: StorageLocation): boolean {
  return (l.space === 'file:' || l.space.startsWith('sftp:') || l.space.startsWith('hdfs:')) && l.path === '/';
}

/** A directory ('/'-terminated) with '.' and '..' resolved, kept '/'-terminated. */
function normalDir(dir: string): string {
  const n = posix.normalize(dir);
  return n.endsWith('/') ? n : n + '/';
}

/** The real path of a local directory, '/'-terminated: its longest existing ancestor resolved, the rest as written. */
function realDir(dir: string): string {
  let head = normalDir(dir);
  let tail = '';
  for (;;) {
    try {
      const real = realpathSync.native(head);
      return normalDir(real + '/' + tail);
    } catch {
      if (head === '/') return normalDir(dir);
      const parent = posix.dirname(head.slice(0, -1));
      tail = posix.basename(head) + '/' + tail;
      head = parent.endsWith('/') ? parent : parent + '/';
    }
  }
}
