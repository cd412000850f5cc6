import { homedir } from 'node:os';
import { resolve } from 'node:path';
import { UsageError } from '../errors.js';

/**
 * A parsed storage address. Syntax (juicefs's):
 *   [NAME://][ACCESS_KEY:SECRET_KEY[:TOKEN]@]BUCKET[.ENDPOINT][/PREFIX]
 *   minio://[AK:SK@]ENDPOINT/BUCKET[/PREFIX]            (path style; also s3:// on IPs and localhost)
 *   /local/path, ./relative, ~/home, file:///abs/path   (local disk)
 *   [user@]host:[path], sftp://user@host[:port][/path]  (SFTP; no path: the login's home)
 *   hdfs://[user@]namenode:port[/path]                  (HDFS over WebHDFS; no path: the user's home)
 *   mem://NAME/PREFIX                                    (in-process, for tests and benchmarks)
 * A trailing '/' means "directory"; without it the last part is a key prefix.
 */
export interface Address {
  scheme: string;
  /** Secrets removed: safe for messages. */
  display: string;
  /**
   * Object stores: the bucket. File-like stores (file, sftp, hdfs): the directory the keys are
   * relative to, ending in '/'; for sftp and hdfs, '' is the login's home directory (an address
   * without a path). mem: the store's name.
   */
  bucket: string;
  /** host[:port] of the service, or '' for the provider's default. */
  endpoint: string;
  /** The bucket is in the path, not the host name. */
  pathStyle: boolean;
  /** Key prefix inside the bucket or directory ('' for all of it). */
  prefix: string;
  accessKey?: string;
  secretKey?: string;
  token?: string;
  user?: string;
  password?: string;
  host?: string;
  port?: number;
}

const FILE_LIKE = new Set(['file', 'sftp', 'hdfs']);

function decode(part: string, what: string, original: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new UsageError(`bad percent-escape in the ${what} of ${redactAddress(original)}`);
  }
}

/** Split a directory-like path into the directory (ending in '/') and the key prefix after it. */
function splitDir(path: string): { dir: string; prefix: string } {
  const i = path.lastIndexOf('/');
  return { dir: path.slice(0, i + 1), prefix: path.slice(i + 1) };
}

function isPathStyleHost(host: string): boolean {
  const h = host.toLowerCase();
  return (
    /^(localhost|\[[0-9a-f:.]+\]|\d{1,3}(\.\d{1,3}){3})(:\d+)?$/.test(h) ||
    /^s3[.-][a-z0-9-]*\.amazonaws\.com(\.cn)?(:\d+)?$/.test(h) ||
    /^[a-z0-9-]+:\d+$/.test(h)
  );
}

function parseHostPort(hostport: string, original: string): { host: string; port?: number } {
  const m = /^(\[[^\]]+\]|[^:]*)(?::(\d*))?$/.exec(hostport);
  if (!m || !m[1]) throw new UsageError(`missing host in ${redactAddress(original)}`);
  const host = m[1].replace(/^\[|\]$/g, '');
  if (m[2] === undefined || m[2] === '') return { host };
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`bad port ${m[2]} in ${redactAddress(original)}`);
  return { host, port };
}

/** The `[user@]host:path` form of SFTP (scp's syntax): a colon before any slash. */
const SCP_LIKE = /^(?:([^@/]+)@)?(\[[^\]]+\]|[A-Za-z0-9][A-Za-z0-9._-]*):(.*)$/s;

export function parseAddress(input: string, options: { cwd?: string } = {}): Address {
  if (input === '') throw new UsageError('an address is empty');
  const cwd = options.cwd ?? process.cwd();
  const schemeMatch = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(input);

  if (!schemeMatch) {
    const scp = input.startsWith('/') || input.startsWith('.') || input.startsWith('~') ? null : SCP_LIKE.exec(input);
    if (scp) {
      const [, userinfo, host = '', path = ''] = scp;
      const { user, password } = splitUserinfo(userinfo);
      const { dir, prefix } = splitDir(path);
      return withDisplay(
        { scheme: 'sftp', bucket: dir, endpoint: host.replace(/^\[|\]$/g, ''), pathStyle: false, prefix, host: host.replace(/^\[|\]$/g, ''), ...opt({ user, password }) },
        input,
      );
    }
    let path = input;
    if (path === '~' || path.startsWith('~/')) path = homedir() + path.slice(1);
    const trailing = path.endsWith('/') || path === '.' || path === '..' || path.endsWith('/.') || path.endsWith('/..');
    let abs = resolve(cwd, path);
    if (trailing && !abs.endsWith('/')) abs += '/';
    const { dir, prefix } = splitDir(abs);
    return { scheme: 'file', display: input, bucket: dir, endpoint: '', pathStyle: false, prefix };
  }

  const scheme = (schemeMatch[1] ?? '').toLowerCase();
  const rest = input.slice(schemeMatch[0].length);
  const slash = rest.indexOf('/');
  const authority = slash < 0 ? rest : rest.slice(0, slash);
  const rawPath = slash < 0 ? '' : rest.slice(slash);
  const at = authority.lastIndexOf('@');
  const userinfo = at < 0 ? undefined : authority.slice(0, at);
  const hostpart = at < 0 ? authority : authority.slice(at + 1);
  const path = decode(rawPath, 'path', input);

  if (scheme === 'file') {
    if (hostpart !== '' && hostpart !== 'localhost') throw new UsageError(`file:// addresses take an absolute path: ${input}`);
    const p = path === '' ? '/' : path;
    const { dir, prefix } = splitDir(p);
    return { scheme, display: input, bucket: dir, endpoint: '', pathStyle: false, prefix };
  }

  if (scheme === 'sftp' || scheme === 'hdfs') {
    const { user, password } = splitUserinfo(userinfo === undefined ? undefined : decode(userinfo, 'user', input));
    const { host, port } = parseHostPort(hostpart, input);
    // No path means the login's home, as `scp user@host:` does (and HDFS's home directory), never
    // the filesystem's root: an empty bucket, which the backend resolves. An explicit '/' is the root.
    const { dir, prefix } = splitDir(path);
    return withDisplay(
      { scheme, bucket: dir, endpoint: hostpart, pathStyle: false, prefix, host, ...opt({ user, password, port }) },
      input,
    );
  }

  // Object stores.
  let accessKey: string | undefined;
  let secretKey: string | undefined;
  let token: string | undefined;
  if (userinfo !== undefined) {
    const parts = userinfo.split(':');
    if (parts.length > 3) throw new UsageError(`too many ':' in the credentials of ${redactAddress(input)}; escape ':' in keys as %3A`);
    accessKey = decode(parts[0] ?? '', 'access key', input);
    if (parts[1] !== undefined) secretKey = decode(parts[1], 'secret key', input);
    if (parts[2] !== undefined) token = decode(parts[2], 'session token', input);
  }
  const pathStyle = scheme === 'minio' || (scheme === 's3' && isPathStyleHost(hostpart));
  let bucket: string;
  let endpoint: string;
  let prefix: string;
  if (scheme === 'mem') {
    bucket = hostpart;
    endpoint = '';
    prefix = path.replace(/^\//, '');
  } else if (pathStyle) {
    endpoint = hostpart;
    const p = path.replace(/^\//, '');
    const i = p.indexOf('/');
    bucket = i < 0 ? p : p.slice(0, i);
    prefix = i < 0 ? '' : p.slice(i + 1);
    if (bucket === '') throw new UsageError(`no bucket in ${redactAddress(input)}: path-style addresses read ${scheme}://[AK:SK@]ENDPOINT/BUCKET[/PREFIX]`);
  } else {
    const dot = hostpart.indexOf('.');
    bucket = dot < 0 ? hostpart : hostpart.slice(0, dot);
    endpoint = dot < 0 ? '' : hostpart.slice(dot + 1);
    prefix = path.replace(/^\//, '');
    if (bucket === '') throw new UsageError(`no bucket in ${redactAddress(input)}`);
  }
  return withDisplay({ scheme, bucket, endpoint, pathStyle, prefix, ...opt({ accessKey, secretKey, token }) }, input);
}

function splitUserinfo(userinfo: string | undefined): { user?: string; password?: string } {
  if (userinfo === undefined || userinfo === '') return {};
  const i = userinfo.indexOf(':');
  return i < 0 ? { user: userinfo } : { user: userinfo.slice(0, i), password: userinfo.slice(i + 1) };
}

/** Drop undefined members (exactOptionalPropertyTypes). */
function opt<T extends Record<string, unknown>>(o: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return out as { [K in keyof T]?: Exclude<T[K], undefined> };
}

function withDisplay(a: Omit<Address, 'display'>, input: string): Address {
  return { ...a, display: redactAddress(input) };
}

/** The address with its secret key, token or password replaced by '****'. */
export function redactAddress(input: string): string {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)?([^/]*)@/.exec(input);
  if (!m) return input;
  const userinfo = m[2] ?? '';
  const colon = userinfo.indexOf(':');
  if (colon < 0) return input;
  return (m[1] ?? '') + userinfo.slice(0, colon) + ':****@' + input.slice(m[0].length);
}

/** Secrets of an address, for the run's redactor. */
export function secretsOf(a: Address): string[] {
  return [a.secretKey, a.token, a.password].filter((s): s is string => typeof s === 'string' && s.length > 0);
}

/** True for stores whose keys are paths in a directory tree. */
export function isFileLike(a: Address): boolean {
  return FILE_LIKE.has(a.scheme);
}
