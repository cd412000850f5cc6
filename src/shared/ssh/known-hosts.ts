import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { dirname } from 'node:path';
import { matchPatternList } from './config.js';

/**
 * OpenSSH's known_hosts files (sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT"): one key per line,
 * `[@marker] patterns keytype base64 [comment]`, where patterns is a comma-separated list with
 * `*`, `?` and `!`, or a hashed `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`. The name of a host
 * on a port other than 22 is `[host]:port`.
 */

/** Where a key on record lives, for messages ("the old key is at ~/.ssh/known_hosts:3"). */
export interface KnownHostLine {
  file: string;
  line: number;
  keyType: string;
  key: Buffer;
  revoked: boolean;
}

export type HostKeyStatus =
  | { status: 'known'; line: KnownHostLine }
  /** No key of the server's type is on record (other types may be: `others`). */
  | { status: 'new'; others: KnownHostLine[] }
  | { status: 'changed'; line: KnownHostLine }
  | { status: 'revoked'; line: KnownHostLine };

/** The name known_hosts records for a host and port. */
export function knownHostName(host: string, port: number): string {
  const h = host.toLowerCase();
  return port === 22 ? h : `[${h}]:${port}`;
}

/** The key type written at the start of an SSH public key blob (`ssh-ed25519`, `ssh-rsa`, ...). */
export function keyTypeOf(blob: Buffer): string {
  if (blob.length < 4) return '';
  const n = blob.readUInt32BE(0);
  return blob.subarray(4, 4 + n).toString('latin1');
}

/** OpenSSH's fingerprint: `SHA256:` + unpadded base64 of the blob's SHA-256. */
export function fingerprint(blob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

function hashedMatch(entry: string, name: string): boolean {
  const parts = entry.split('|');
  // ['', '1', salt, hash]
  if (parts.length !== 4 || parts[1] !== '1') return false;
  const salt = Buffer.from(parts[2]!, 'base64');
  const want = Buffer.from(parts[3]!, 'base64');
  const got = createHmac('sha1', salt).update(name).digest();
  return want.length === got.length && timingSafeEqual(want, got);
}

/** A hashed host entry for `name`, as `ssh-keygen -H` and HashKnownHosts write it. */
export function hashHostName(name: string, salt: Buffer = randomBytes(20)): string {
  const hash = createHmac('sha1', salt).update(name).digest();
  return `|1|${salt.toString('base64')}|${hash.toString('base64')}`;
}

function hostMatches(hosts: string, name: string): boolean {
  if (hosts.startsWith('|')) return hashedMatch(hosts, name);
  return matchPatternList(name, hosts.split(','));
}

/** Every line of the files that names `name` (missing files are skipped; @cert-authority is not supported). */
export async function knownHostLines(files: string[], name: string): Promise<KnownHostLine[]> {
  const out: KnownHostLine[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = await fsp.readFile(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') continue;
      throw err;
    }
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const l = lines[i]!.trim();
      if (l === '' || l.startsWith('#')) continue;
      const words = l.split(/\s+/);
      let marker: string | undefined;
      if (words[0]!.startsWith('@')) marker = words.shift();
      if (marker === '@cert-authority') continue;
      const [hosts, keyType, b64] = words;
      if (!hosts || !keyType || !b64) continue;
      if (!hostMatches(hosts, name)) continue;
      out.push({ file, line: i + 1, keyType, key: Buffer.from(b64, 'base64'), revoked: marker === '@revoked' });
    }
  }
  return out;
}

/** What the files say about `key` presented by the host known as `name`. */
export async function checkHostKey(files: string[], name: string, key: Buffer): Promise<HostKeyStatus> {
  const lines = await knownHostLines(files, name);
  const revoked = lines.find((l) => l.revoked && l.key.equals(key));
  if (revoked) return { status: 'revoked', line: revoked };
  const valid = lines.filter((l) => !l.revoked);
  const same = valid.find((l) => l.key.equals(key));
  if (same) return { status: 'known', line: same };
  const type = keyTypeOf(key);
  const changed = valid.find((l) => l.keyType === type);
  if (changed) return { status: 'changed', line: changed };
  return { status: 'new', others: valid };
}

/** Append a key for `name`, creating the file (0600) and its directory (0700) when missing. */
export async function addKnownHost(file: string, name: string, key: Buffer, options: { hash?: boolean } = {}): Promise<void> {
  await fsp.mkdir(dirname(file), { recursive: true, mode: 0o700 });
  let sep = '';
  try {
    const fh = await fsp.open(file, 'r');
    try {
      const { size } = await fh.stat();
      if (size > 0) {
        const last = Buffer.alloc(1);
        await fh.read(last, 0, 1, size - 1);
        if (last[0] !== 0x0a) sep = '\n';
      }
    } finally {
      await fh.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const host = options.hash ? hashHostName(name) : name;
  await fsp.appendFile(file, `${sep}${host} ${keyTypeOf(key)} ${key.toString('base64')}\n`, { mode: 0o600 });
}

/** Host key algorithms that produce keys of a known_hosts key type. */
export function hostKeyAlgorithmsFor(keyType: string): string[] {
  return keyType === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : [keyType];
}
