import { promises as fsp } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import { basename, dirname, isAbsolute, join } from 'node:path';

/**
 * The part of OpenSSH's client configuration (ssh_config(5)) that ferry honours. Files are read in
 * OpenSSH's order — the user's file, then the system's — and for each keyword the first value
 * obtained wins; IdentityFile accumulates. `Host` lines take patterns with `*`, `?` and `!`
 * negation, matched case-insensitively against the host as the user wrote it. `Match` blocks other
 * than `Match all` are not evaluated and never apply. `Include` is followed (globs in the last path
 * component).
 */
export interface SshConfigValues {
  hostName?: string;
  user?: string;
  port?: number;
  identityFiles: string[];
  identitiesOnly?: boolean;
  /** 'SSH_AUTH_SOCK' (the environment's agent), 'none', or a socket path. */
  identityAgent?: string;
  /** Seconds. */
  connectTimeout?: number;
  userKnownHostsFiles?: string[];
  globalKnownHostsFiles?: string[];
  strictHostKeyChecking?: string;
  hashKnownHosts?: boolean;
  hostKeyAlias?: string;
  /** Seconds. */
  serverAliveInterval?: number;
  serverAliveCountMax?: number;
  /**
   * ProxyJump as written (`[user@]host[:port]` hops, comma-separated, or `none`). OpenSSH takes the
   * first of ProxyJump and ProxyCommand that applies: a ProxyCommand seen first leaves this unset.
   */
  proxyJump?: string;
  /** ProxyCommand as written. ferry does not run proxy commands; it is read only for the precedence above. */
  proxyCommand?: string;
}

const MAX_INCLUDE_DEPTH = 16;

/** Split one configuration line into words; double quotes group words with spaces. */
export function splitConfigLine(line: string): string[] {
  const words: string[] = [];
  let i = 0;
  // The keyword may be separated from its first argument by '=' (with optional spaces).
  const kw = /^\s*([^\s=]+)\s*(?:=\s*|\s+|$)/.exec(line);
  if (!kw) return words;
  words.push(kw[1]!);
  i = kw[0].length;
  while (i < line.length) {
    while (i < line.length && /\s/.test(line[i]!)) i++;
    if (i >= line.length) break;
    if (line[i] === '#') break;
    let word = '';
    if (line[i] === '"') {
      const end = line.indexOf('"', i + 1);
      if (end < 0) {
        word = line.slice(i + 1);
        i = line.length;
      } else {
        word = line.slice(i + 1, end);
        i = end + 1;
      }
    } else {
      while (i < line.length && !/\s/.test(line[i]!)) word += line[i++];
    }
    words.push(word);
  }
  return words;
}

/** `*` and `?` glob, whole string, case-insensitive. */
export function matchPattern(name: string, pattern: string): boolean {
  const re = new RegExp(
    '^' +
      pattern
        .split('')
        .map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
        .join('') +
      '$',
    'is',
  );
  return re.test(name);
}

/** A list of patterns, any of which may be negated with '!': a negated match rejects the whole list. */
export function matchPatternList(name: string, patterns: string[]): boolean {
  let matched = false;
  for (const p of patterns) {
    if (p.startsWith('!')) {
      if (matchPattern(name, p.slice(1))) return false;
    } else if (matchPattern(name, p)) matched = true;
  }
  return matched;
}

export function expandTilde(path: string, home: string): string {
  if (path === '~') return home;
  if (path.startsWith('~/')) return home + path.slice(1);
  return path;
}

interface ReadState {
  host: string;
  values: SshConfigValues;
  home: string;
}

async function readConfigFile(path: string, state: ReadState, baseDir: string, depth: number, activeIn: boolean): Promise<void> {
  let text: string;
  try {
    text = await fsp.readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return;
    throw err;
  }
  let active = activeIn;
  for (const raw of text.split(/\r?\n/)) {
    const trimmed = raw.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const words = splitConfigLine(trimmed);
    const keyword = words[0]?.toLowerCase();
    const args = words.slice(1);
    if (!keyword) continue;
    if (keyword === 'host') {
      active = matchPatternList(state.host, args);
      continue;
    }
    if (keyword === 'match') {
      active = args.length === 1 && args[0]!.toLowerCase() === 'all';
      continue;
    }
    if (!active) continue;
    if (keyword === 'include') {
      if (depth >= MAX_INCLUDE_DEPTH) continue;
      for (const arg of args) {
        for (const file of await expandInclude(expandTilde(arg, state.home), baseDir)) {
          await readConfigFile(file, state, baseDir, depth + 1, true);
        }
      }
      continue;
    }
    apply(state.values, keyword, args, state.home);
  }
}

/** Files an Include names: relative paths are under the config's directory; globs in the last part. */
async function expandInclude(arg: string, baseDir: string): Promise<string[]> {
  const path = isAbsolute(arg) ? arg : join(baseDir, arg);
  const name = basename(path);
  if (!/[*?]/.test(name)) return [path];
  let names: string[];
  try {
    names = await fsp.readdir(dirname(path));
  } catch {
    return [];
  }
  return names
    .filter((n) => !n.startsWith('.') && matchPattern(n, name))
    .sort()
    .map((n) => join(dirname(path), n));
}

function yesNo(v: string | undefined): boolean | undefined {
  if (v === undefined) return undefined;
  const l = v.toLowerCase();
  if (l === 'yes' || l === 'true') return true;
  if (l === 'no' || l === 'false') return false;
  return undefined;
}

function apply(v: SshConfigValues, keyword: string, args: string[], home: string): void {
  const first = args[0];
  if (first === undefined) return;
  switch (keyword) {
    case 'hostname':
      v.hostName ??= first;
      break;
    case 'user':
      v.user ??= first;
      break;
    case 'port': {
      const n = Number(first);
      if (v.port === undefined && Number.isInteger(n) && n > 0 && n < 65536) v.port = n;
      break;
    }
    case 'identityfile':
      v.identityFiles.push(first);
      break;
    case 'identitiesonly':
      if (v.identitiesOnly === undefined) {
        const b = yesNo(first);
        if (b !== undefined) v.identitiesOnly = b;
      }
      break;
    case 'identityagent':
      v.identityAgent ??= first;
      break;
    case 'connecttimeout': {
      const n = Number(first);
      if (v.connectTimeout === undefined && Number.isFinite(n) && n > 0) v.connectTimeout = n;
      break;
    }
    case 'userknownhostsfile':
      v.userKnownHostsFiles ??= args.map((a) => expandTilde(a, home));
      break;
    case 'globalknownhostsfile':
      v.globalKnownHostsFiles ??= args.map((a) => expandTilde(a, home));
      break;
    case 'stricthostkeychecking':
      v.strictHostKeyChecking ??= first.toLowerCase();
      break;
    case 'hashknownhosts':
      if (v.hashKnownHosts === undefined) {
        const b = yesNo(first);
        if (b !== undefined) v.hashKnownHosts = b;
      }
      break;
    case 'hostkeyalias':
      v.hostKeyAlias ??= first;
      break;
    case 'serveraliveinterval': {
      const n = Number(first);
      if (v.serverAliveInterval === undefined && Number.isFinite(n) && n >= 0) v.serverAliveInterval = n;
      break;
    }
    case 'serveralivecountmax': {
      const n = Number(first);
      if (v.serverAliveCountMax === undefined && Number.isInteger(n) && n >= 0) v.serverAliveCountMax = n;
      break;
    }
    case 'proxyjump':
      if (v.proxyJump === undefined && v.proxyCommand === undefined) v.proxyJump = first;
      break;
    case 'proxycommand':
      if (v.proxyJump === undefined && v.proxyCommand === undefined) v.proxyCommand = args.join(' ');
      break;
    default:
      break;
  }
}

/**
 * One hop of a ProxyJump list, as OpenSSH reads it: `[user@]host[:port]` (an IPv6 address in
 * brackets), or `ssh://[user@]host[:port]`. Undefined when it is not one.
 */
export function parseJumpHost(spec: string): { user?: string; host: string; port?: number } | undefined {
  let s = spec.trim();
  if (/^ssh:\/\//i.test(s)) s = s.slice(6).replace(/\/$/, '');
  let user: string | undefined;
  const at = s.lastIndexOf('@');
  if (at >= 0) {
    user = s.slice(0, at);
    s = s.slice(at + 1);
    if (user === '') return undefined;
  }
  let host = s;
  let portText: string | undefined;
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (bracket) {
    host = bracket[1]!;
    portText = bracket[2];
  } else if (s.indexOf(':') === s.lastIndexOf(':') && s.includes(':')) {
    host = s.slice(0, s.indexOf(':'));
    portText = s.slice(s.indexOf(':') + 1);
    if (!/^\d+$/.test(portText)) return undefined;
  }
  if (host === '' || /[\s,/]/.test(host)) return undefined;
  let port: number | undefined;
  if (portText !== undefined) {
    port = Number(portText);
    if (!Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  }
  return { ...(user !== undefined ? { user } : {}), host, ...(port !== undefined ? { port } : {}) };
}

/**
 * The raw values the configuration files give for `host` (as the user wrote it). Missing files are
 * no error. Tokens (`%h`, `~`) are not expanded here: see resolveSshTarget.
 */
export async function readSshConfig(host: string, files: { user?: string; system?: string }, home = homedir()): Promise<SshConfigValues> {
  const state: ReadState = { host: host.toLowerCase(), values: { identityFiles: [] }, home };
  if (files.user) await readConfigFile(files.user, state, dirname(files.user), 0, true);
  if (files.system) await readConfigFile(files.system, state, dirname(files.system), 0, true);
  return state.values;
}

/** Expand ssh_config's percent tokens (the common ones) and a leading '~'. */
export function expandTokens(value: string, tokens: Record<string, string>, home: string): string {
  const out = value.replace(/%(.)/g, (m, c: string) => (c === '%' ? '%' : tokens[c] ?? m));
  return expandTilde(out, home);
}

export function localUserName(): string {
  try {
    return userInfo().username;
  } catch {
    return process.env['USER'] ?? process.env['LOGNAME'] ?? 'root';
  }
}
