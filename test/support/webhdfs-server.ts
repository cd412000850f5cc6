/**
 * A WebHDFS namenode and datanode for tests, each on its own 127.0.0.1 port.
 *
 * The namenode holds the namespace (a tree in memory; file bytes live in a temporary directory) and
 * answers OPEN and CREATE with 307 to the datanode, as Hadoop does. It checks what a real namenode
 * checks with simple authentication: `user.name` (missing: the static web user `dr.who`), POSIX
 * permissions with a superuser, HDFS's name rules (no ':' '.' '..', 255-byte components), and it
 * answers failures as RemoteException JSON with Hadoop's statuses: 404 for FileNotFoundException,
 * 400 for IllegalArgumentException and UnsupportedOperationException, and 403 for every other
 * IOException (StandbyException, AccessControlException, FileAlreadyExistsException...).
 * LISTSTATUS_BATCH pages at `batchLimit` entries (100 here, 1000 by default in Hadoop).
 * Creating without replacing is atomic, as on a namenode: RENAME with `renameoptions` (rename2)
 * refuses an existing destination unless OVERWRITE (FileAlreadyExistsException, never a move into
 * a directory), checking and renaming in one step; CREATE with `overwrite=false` holds the name from
 * its start to its end, so of racing creates one wins.
 */
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';

export type WebHdfsFault = 'throttle' | 'error' | 'drop' | 'standby';
/** Datanode read faults: 'busy' answers 503 with an error body; 'cut' drops the connection midway. */
export type DatanodeFault = 'busy' | 'cut';

export interface WebHdfsServerOptions {
  superuser?: string;
  /** Groups of each user; unknown users belong to a group of their own name. */
  groups?: Record<string, string[]>;
  batchLimit?: number;
  /** false: answer LISTSTATUS_BATCH as Hadoop before 2.8 does (unknown op). */
  listStatusBatch?: boolean;
  /** false: answer GETFILELINKSTATUS as Hadoop before 3.3.5 does (unknown op). */
  fileLinkStatus?: boolean;
  /** Allow CREATESYMLINK (Hadoop's test-only FileSystem.enableSymlinks). */
  symlinks?: boolean;
  umask?: number;
  /** Break the namenode's byte order in listings (a broken or foreign server), to test the guard. */
  unsortedListings?: boolean;
}

interface INode {
  type: 'FILE' | 'DIRECTORY' | 'SYMLINK';
  fileId: number;
  owner: string;
  group: string;
  permission: number;
  mtime: number;
  atime: number;
  length: number;
  children?: Map<string, INode>;
  /** Path of the bytes in the data directory. */
  data?: string;
  target?: string;
}

export interface LoggedRequest {
  server: 'namenode' | 'datanode';
  method: string;
  op: string;
  /** The decoded HDFS path. */
  path: string;
  /** The URL as sent. */
  url: string;
  user: string | undefined;
  params: Record<string, string>;
}

class RemoteError extends Error {
  constructor(
    readonly status: number,
    readonly exception: string,
    readonly javaClassName: string,
    message: string,
  ) {
    super(message);
  }
}

const fnf = (m: string) => new RemoteError(404, 'FileNotFoundException', 'java.io.FileNotFoundException', m);
const denied = (m: string) => new RemoteError(403, 'AccessControlException', 'org.apache.hadoop.security.AccessControlException', m);
const ioe = (name: string, pkg: string, m: string) => new RemoteError(403, name, `${pkg}.${name}`, m);
const illegal = (m: string) => new RemoteError(400, 'IllegalArgumentException', 'java.lang.IllegalArgumentException', m);

function byteCompare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function modeString(n: INode): string {
  const t = n.type === 'DIRECTORY' ? 'd' : n.type === 'SYMLINK' ? 'l' : '-';
  let s = t;
  for (let shift = 6; shift >= 0; shift -= 3) {
    const b = (n.permission >> shift) & 7;
    s += (b & 4 ? 'r' : '-') + (b & 2 ? 'w' : '-') + (b & 1 ? 'x' : '-');
  }
  return s;
}

export class WebHdfsServer {
  readonly requests: LoggedRequest[] = [];
  /** 307s the namenode sent, and requests the datanode served, by op. */
  readonly redirects = { OPEN: 0, CREATE: 0 };
  readonly datanodeRequests = { OPEN: 0, CREATE: 0 };
  readonly ops = new Map<string, number>();
  namenodePort = 0;
  datanodePort = 0;

  readonly #o: Required<WebHdfsServerOptions>;
  readonly #root: INode;
  #nextId = 16385;
  /** Paths of CREATEs with overwrite=false under way: the name is theirs until they end. */
  readonly #creating = new Set<string>();
  #dataDir = '';
  #faults: WebHdfsFault[] = [];
  #dnFaults: DatanodeFault[] = [];
  readonly #namenode: http.Server;
  readonly #datanode: http.Server;

  private constructor(o: WebHdfsServerOptions) {
    this.#o = {
      superuser: o.superuser ?? 'hdfs',
      groups: o.groups ?? {},
      batchLimit: o.batchLimit ?? 100,
      listStatusBatch: o.listStatusBatch ?? true,
      fileLinkStatus: o.fileLinkStatus ?? true,
      symlinks: o.symlinks ?? false,
      umask: o.umask ?? 0o022,
      unsortedListings: o.unsortedListings ?? false,
    };
    this.#root = this.#newNode('DIRECTORY', this.#o.superuser, 'supergroup', 0o755);
    this.#namenode = http.createServer((req, res) => void this.#serve('namenode', req, res));
    this.#datanode = http.createServer((req, res) => void this.#serve('datanode', req, res));
  }

  static async start(options: WebHdfsServerOptions = {}): Promise<WebHdfsServer> {
    const s = new WebHdfsServer(options);
    s.#dataDir = await fsp.mkdtemp(join(tmpdir(), 'ferry-webhdfs-'));
    const listen = (srv: http.Server) =>
      new Promise<number>((resolve) => srv.listen(0, '127.0.0.1', () => resolve((srv.address() as AddressInfo).port)));
    s.namenodePort = await listen(s.#namenode);
    s.datanodePort = await listen(s.#datanode);
    return s;
  }

  async stop(): Promise<void> {
    for (const srv of [this.#namenode, this.#datanode]) {
      if (!srv.listening) continue;
      srv.closeAllConnections();
      await new Promise<void>((resolve) => srv.close(() => resolve()));
    }
    await fsp.rm(this.#dataDir, { recursive: true, force: true });
  }

  /** Stop the datanode (its port then refuses connections); the namenode still redirects to it. */
  async stopDatanode(): Promise<void> {
    this.#datanode.closeAllConnections();
    await new Promise<void>((resolve) => this.#datanode.close(() => resolve()));
  }

  /** Fail the next `count` namenode requests. */
  inject(fault: WebHdfsFault, count: number): void {
    for (let i = 0; i < count; i++) this.#faults.push(fault);
  }

  /** Fail the next `count` datanode reads (OPEN). */
  injectDatanodeRead(fault: DatanodeFault, count: number): void {
    for (let i = 0; i < count; i++) this.#dnFaults.push(fault);
  }

  /** Make a directory (and its parents) as the superuser would, owned by `owner`. */
  mkdir(path: string, owner: string, permission = 0o755): void {
    let cur = this.#root;
    for (const c of path.split('/').filter(Boolean)) {
      let next = cur.children!.get(c);
      if (!next) cur.children!.set(c, (next = this.#newNode('DIRECTORY', owner, this.#groupsOf(owner)[0]!, permission)));
      cur = next;
    }
  }

  /** The stored node of a path (not following links), for assertions. */
  stat(path: string): { type: string; owner: string; group: string; permission: number; mtime: number; length: number; target?: string } | undefined {
    const n = this.#find(path);
    if (!n) return undefined;
    return { type: n.type, owner: n.owner, group: n.group, permission: n.permission, mtime: n.mtime, length: n.length, ...(n.target ? { target: n.target } : {}) };
  }

  /** Every path under `path` (not following links), as stored. */
  walk(path: string): string[] {
    const out: string[] = [];
    const visit = (n: INode | undefined, at: string): void => {
      for (const [name, child] of n?.children ?? []) {
        out.push(`${at}/${name}`);
        visit(child, `${at}/${name}`);
      }
    };
    visit(this.#find(path), path.replace(/\/$/, ''));
    return out.sort(byteCompare);
  }

  /** Names in a directory, as stored. */
  names(path: string): string[] {
    return [...(this.#find(path)?.children?.keys() ?? [])].sort(byteCompare);
  }

  async read(path: string): Promise<Buffer> {
    const n = this.#find(path);
    if (!n?.data) throw new Error(`no file ${path}`);
    return fsp.readFile(n.data);
  }

  #find(path: string): INode | undefined {
    let cur: INode | undefined = this.#root;
    for (const c of path.split('/').filter(Boolean)) cur = cur?.children?.get(c);
    return cur;
  }

  #newNode(type: INode['type'], owner: string, group: string, permission: number): INode {
    const now = Date.now();
    const n: INode = { type, fileId: this.#nextId++, owner, group, permission, mtime: now, atime: now, length: 0 };
    if (type === 'DIRECTORY') n.children = new Map();
    return n;
  }

  #groupsOf(user: string): string[] {
    return this.#o.groups[user] ?? [user];
  }

  // ---- requests ----

  async #serve(server: 'namenode' | 'datanode', req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const rawPath = q < 0 ? url : url.slice(0, q);
    // Hadoop's ParamFilter lower-cases parameter names; values are decoded ('+' is a space).
    const params: Record<string, string> = {};
    for (const [k, v] of new URLSearchParams(q < 0 ? '' : url.slice(q + 1))) params[k.toLowerCase()] = v;
    const op = (params.op ?? '').toUpperCase();
    const user = params['user.name'];
    let path = '';
    try {
      if (!rawPath.startsWith('/webhdfs/v1')) {
        res.writeHead(404, { 'content-type': 'text/html' }).end('<html><body>Not Found</body></html>');
        return;
      }
      path = this.#decodePath(rawPath.slice('/webhdfs/v1'.length));
    } catch (err) {
      this.#fail(res, err);
      return;
    }
    this.requests.push({ server, method: req.method ?? '', op, path, url, user, params });
    if (server === 'namenode') {
      this.ops.set(op, (this.ops.get(op) ?? 0) + 1);
      const fault = this.#faults.shift();
      if (fault) return this.#fault(fault, req, res);
    }
    try {
      if (server === 'namenode') await this.#namenodeOp(req, res, op, path, params, user ?? 'dr.who');
      else await this.#datanodeOp(req, res, op, path, params, user ?? 'dr.who');
    } catch (err) {
      this.#fail(res, err);
    }
  }

  #fault(fault: WebHdfsFault, req: IncomingMessage, res: ServerResponse): void {
    req.resume();
    if (fault === 'drop') {
      req.socket.destroy();
      return;
    }
    if (fault === 'throttle')
      return this.#fail(res, new RemoteError(503, 'RetriableException', 'org.apache.hadoop.ipc.RetriableException', 'Server too busy'));
    if (fault === 'standby')
      return this.#fail(res, ioe('StandbyException', 'org.apache.hadoop.ipc', 'Operation category READ is not supported in state standby'));
    return this.#fail(res, new RemoteError(500, 'NullPointerException', 'java.lang.NullPointerException', 'injected failure'));
  }

  #fail(res: ServerResponse, err: unknown): void {
    const e =
      err instanceof RemoteError ? err : new RemoteError(500, 'RuntimeException', 'java.lang.RuntimeException', String((err as Error)?.message ?? err));
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const body = JSON.stringify({ RemoteException: { exception: e.exception, javaClassName: e.javaClassName, message: e.message } });
    res.writeHead(e.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
  }

  #json(res: ServerResponse, value: unknown): void {
    const body = JSON.stringify(value);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
  }

  #ok(res: ServerResponse): void {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': 0 }).end();
  }

  #decodePath(raw: string): string {
    const parts = raw.split('/').filter((p) => p !== '');
    const names: string[] = [];
    for (const p of parts) {
      let name: string;
      try {
        name = decodeURIComponent(p);
      } catch {
        throw illegal(`Invalid path: bad escape in ${raw}`);
      }
      names.push(name);
    }
    const path = '/' + names.join('/');
    // DFSUtil.isValidName.
    for (const n of names)
      if (n === '.' || n === '..' || n.includes(':') || n.includes('/'))
        throw new RemoteError(400, 'InvalidPathException', 'org.apache.hadoop.fs.InvalidPathException', `Invalid path name Invalid file name: ${path}`);
    if (path.length > 8000) throw ioe('PathComponentTooLongException', 'org.apache.hadoop.hdfs.protocol.FSLimitException', `Path too long: ${path.length}`);
    return path;
  }

  #check(user: string, n: INode, access: 4 | 2 | 1 | 5, path: string): void {
    if (user === this.#o.superuser) return;
    const bits = n.owner === user ? n.permission >> 6 : this.#groupsOf(user).includes(n.group) ? n.permission >> 3 : n.permission;
    if ((bits & access) === access) return;
    const name = { 4: 'READ', 2: 'WRITE', 1: 'EXECUTE', 5: 'READ_EXECUTE' }[access];
    throw denied(`Permission denied: user=${user}, access=${name}, inode="${path}":${n.owner}:${n.group}:${modeString(n)}`);
  }

  /** Walk to the parent of `path`, checking EXECUTE on each directory passed. */
  #lookup(path: string, user: string): { parent: INode | undefined; node: INode | undefined; name: string; parentPath: string } {
    const comps = path.split('/').filter(Boolean);
    if (comps.length === 0) return { parent: undefined, node: this.#root, name: '', parentPath: '' };
    let cur = this.#root;
    let curPath = '/';
    for (let i = 0; i < comps.length - 1; i++) {
      this.#check(user, cur, 1, curPath);
      const next = cur.children!.get(comps[i]!);
      curPath = curPath === '/' ? `/${comps[i]}` : `${curPath}/${comps[i]}`;
      if (!next || next.type !== 'DIRECTORY') return { parent: undefined, node: undefined, name: comps[comps.length - 1]!, parentPath: curPath };
      cur = next;
    }
    this.#check(user, cur, 1, curPath);
    const name = comps[comps.length - 1]!;
    return { parent: cur, node: cur.children!.get(name), name, parentPath: curPath };
  }

  /** Like #lookup, following symlinks at the end of the path. */
  #resolve(path: string, user: string): { node: INode | undefined; path: string } {
    let p = path;
    for (let hops = 0; hops < 32; hops++) {
      const { node } = this.#lookup(p, user);
      if (!node || node.type !== 'SYMLINK') return { node, path: p };
      p = node.target!;
    }
    throw ioe('IOException', 'java.io', `Too many symlinks: ${path}`);
  }

  /** Make the directories of `path` (not the last component when `parentOnly`), like mkdirs. */
  #mkdirs(path: string, user: string, permission: number, parentOnly: boolean): INode {
    const comps = path.split('/').filter(Boolean);
    const end = parentOnly ? comps.length - 1 : comps.length;
    let cur = this.#root;
    let curPath = '/';
    for (let i = 0; i < end; i++) {
      this.#check(user, cur, 1, curPath);
      const c = comps[i]!;
      const childPath = curPath === '/' ? `/${c}` : `${curPath}/${c}`;
      let next = cur.children!.get(c);
      if (next && next.type !== 'DIRECTORY') {
        if (i === comps.length - 1) throw ioe('FileAlreadyExistsException', 'org.apache.hadoop.fs', `Path is not a directory: ${childPath}`);
        throw ioe('ParentNotDirectoryException', 'org.apache.hadoop.fs', `${childPath} (is not a directory)`);
      }
      if (!next) {
        this.#check(user, cur, 2, curPath);
        this.#checkName(c, curPath);
        next = this.#newNode('DIRECTORY', user, cur.group, (i === comps.length - 1 ? permission : permission | 0o300) & ~this.#o.umask);
        cur.children!.set(c, next);
        cur.mtime = Date.now();
      }
      cur = next;
      curPath = childPath;
    }
    return cur;
  }

  #checkName(name: string, dir: string): void {
    const len = Buffer.byteLength(name);
    if (len > 255)
      throw ioe(
        'PathComponentTooLongException',
        'org.apache.hadoop.hdfs.protocol.FSLimitException',
        `The maximum path component name limit of ${name} in directory ${dir} is exceeded: limit=255 length=${len}`,
      );
  }

  #status(n: INode, suffix: string): Record<string, unknown> {
    const s: Record<string, unknown> = {
      accessTime: n.atime,
      blockSize: n.type === 'FILE' ? 134217728 : 0,
      childrenNum: n.children?.size ?? 0,
      fileId: n.fileId,
      group: n.group,
      length: n.length,
      modificationTime: n.mtime,
      owner: n.owner,
      pathSuffix: suffix,
      permission: n.permission.toString(8),
      replication: n.type === 'FILE' ? 3 : 0,
      storagePolicy: 0,
      type: n.type,
    };
    if (n.type === 'SYMLINK') s.symlink = n.target;
    return s;
  }

  #permissionParam(v: string | undefined, dflt: number): number {
    if (v === undefined || v === '') return dflt;
    if (!/^[0-7]{1,4}$/.test(v) || parseInt(v, 8) > 0o1777) throw illegal(`Invalid value for webhdfs parameter "permission": ${v}`);
    return parseInt(v, 8);
  }

  #unknownOp(method: string, op: string): RemoteError {
    const cls = { GET: 'GetOpParam', PUT: 'PutOpParam', DELETE: 'DeleteOpParam', POST: 'PostOpParam' }[method] ?? 'HttpOpParam';
    return illegal(`Invalid value for webhdfs parameter "op": No enum constant org.apache.hadoop.hdfs.web.resources.${cls}.Op.${op}`);
  }

  #redirect(res: ServerResponse, op: 'OPEN' | 'CREATE', path: string, query: Record<string, string | undefined>): void {
    this.redirects[op]++;
    let q = `op=${op}&namenoderpcaddress=localhost:8020`;
    for (const [k, v] of Object.entries(query)) if (v !== undefined) q += `&${k}=${encodeURIComponent(v)}`;
    const location = `http://127.0.0.1:${this.datanodePort}/webhdfs/v1${path.split('/').map(encodeURIComponent).join('/')}?${q}`;
    res.writeHead(307, { location, 'content-type': 'application/octet-stream', 'content-length': 0 }).end();
  }

  async #namenodeOp(req: IncomingMessage, res: ServerResponse, op: string, path: string, p: Record<string, string>, user: string): Promise<void> {
    const method = req.method ?? 'GET';
    req.resume();
    const key = `${method} ${op}`;
    switch (key) {
      case 'GET GETFILESTATUS': {
        const { node } = this.#resolve(path, user);
        if (!node) throw fnf(`File does not exist: ${path}`);
        return this.#json(res, { FileStatus: this.#status(node, '') });
      }
      case 'GET GETHOMEDIRECTORY':
        // WebHdfsFileSystem.getHomeDirectoryString: /user/ + the short user name, whether or not it exists.
        return this.#json(res, { Path: `/user/${user}` });
      case 'GET GETFILELINKSTATUS': {
        if (!this.#o.fileLinkStatus) throw this.#unknownOp(method, op);
        const { node } = this.#lookup(path, user);
        if (!node) throw fnf(`File does not exist: ${path}`);
        return this.#json(res, { FileStatus: this.#status(node, '') });
      }
      case 'GET LISTSTATUS':
      case 'GET LISTSTATUS_BATCH': {
        if (op === 'LISTSTATUS_BATCH' && !this.#o.listStatusBatch) throw this.#unknownOp(method, op);
        const { node } = this.#resolve(path, user);
        if (!node) throw fnf(`File ${path} does not exist.`);
        let statuses: Record<string, unknown>[];
        let remaining = 0;
        if (node.type !== 'DIRECTORY') statuses = [this.#status(node, '')];
        else {
          this.#check(user, node, 5, path);
          let names = [...node.children!.keys()].sort(byteCompare);
          if (this.#o.unsortedListings) names.reverse();
          const after = p.startafter;
          if (op === 'LISTSTATUS_BATCH') {
            if (after !== undefined && after !== '') names = names.filter((n) => byteCompare(n, after) > 0);
            remaining = Math.max(0, names.length - this.#o.batchLimit);
            names = names.slice(0, this.#o.batchLimit);
          }
          statuses = names.map((n) => this.#status(node.children!.get(n)!, n));
        }
        if (op === 'LISTSTATUS') return this.#json(res, { FileStatuses: { FileStatus: statuses } });
        return this.#json(res, { DirectoryListing: { partialListing: { FileStatuses: { FileStatus: statuses } }, remainingEntries: remaining } });
      }
      case 'GET OPEN': {
        const { node, path: real } = this.#resolve(path, user);
        if (!node) throw fnf(`File does not exist: ${path}`);
        if (node.type !== 'FILE') throw fnf(`Path is not a file: ${real}`);
        const offset = Number(p.offset ?? 0);
        if (!(offset >= 0) || (offset >= node.length && node.length > 0))
          throw ioe('IOException', 'java.io', `Offset=${offset} out of the range [0, ${node.length}); OPEN, path=${path}`);
        return this.#redirect(res, 'OPEN', path, { 'user.name': p['user.name'], offset: p.offset, length: p.length });
      }
      case 'PUT CREATE':
        // The namenode only picks a datanode; the datanode's create does the checks.
        return this.#redirect(res, 'CREATE', path, { 'user.name': p['user.name'], overwrite: p.overwrite, permission: p.permission });
      case 'PUT MKDIRS': {
        this.#mkdirs(path, user, this.#permissionParam(p.permission, 0o755), false);
        return this.#json(res, { boolean: true });
      }
      case 'DELETE DELETE': {
        const { parent, node, name, parentPath } = this.#lookup(path, user);
        if (!node || !parent) return this.#json(res, { boolean: false });
        this.#check(user, parent, 2, parentPath);
        if (node.type === 'DIRECTORY' && node.children!.size > 0 && p.recursive !== 'true')
          throw ioe('PathIsNotEmptyDirectoryException', 'org.apache.hadoop.fs', `\`${path} is non empty': Directory is not empty`);
        parent.children!.delete(name);
        parent.mtime = Date.now();
        await this.#dropData(node);
        return this.#json(res, { boolean: true });
      }
      case 'PUT RENAME': {
        const dst = p.destination;
        if (!dst || !dst.startsWith('/')) throw illegal(`Invalid parameter value: destination = "${dst ?? ''}" is not an absolute path.`);
        const dstPath = this.#decodePath(dst.split('/').map(encodeURIComponent).join('/'));
        // With renameoptions (NONE or OVERWRITE), Hadoop calls rename2: failures are exceptions, not false.
        const rename2 = p.renameoptions !== undefined;
        const overwrite = (p.renameoptions ?? '').split(',').includes('OVERWRITE');
        const src = this.#lookup(path, user);
        if (!src.node || !src.parent) {
          if (!rename2) return this.#json(res, { boolean: false });
          throw fnf(`File does not exist: ${path}`);
        }
        this.#check(user, src.parent, 2, src.parentPath);
        const to = this.#lookup(dstPath, user);
        if (!to.parent) {
          if (!rename2) return this.#json(res, { boolean: false });
          throw fnf(`rename destination parent ${to.parentPath} not found.`);
        }
        this.#check(user, to.parent, 2, to.parentPath);
        this.#checkName(to.name, to.parentPath);
        if (to.node || this.#creating.has(dstPath)) {
          if (!rename2) return this.#json(res, { boolean: false });
          if (!overwrite || !to.node) throw ioe('FileAlreadyExistsException', 'org.apache.hadoop.fs', `rename destination ${dstPath} already exists`);
          if ((to.node.type === 'DIRECTORY') !== (src.node.type === 'DIRECTORY'))
            throw ioe('IOException', 'java.io', `Source ${path} and destination ${dstPath} must both be directories`);
          if (to.node.children && to.node.children.size > 0) throw ioe('IOException', 'java.io', `rename destination directory is not empty: ${dstPath}`);
          await this.#dropData(to.node);
        }
        src.parent.children!.delete(src.name);
        to.parent.children!.set(to.name, src.node);
        src.parent.mtime = to.parent.mtime = Date.now();
        if (rename2) return this.#ok(res);
        return this.#json(res, { boolean: true });
      }
      case 'PUT SETPERMISSION': {
        const { node, path: real } = this.#resolve(path, user);
        if (!node) throw fnf(`File does not exist: ${path}`);
        if (user !== this.#o.superuser && user !== node.owner) throw denied(`Permission denied. user=${user} is not the owner of inode=${real}`);
        node.permission = this.#permissionParam(p.permission, node.type === 'DIRECTORY' ? 0o755 : 0o644);
        return this.#ok(res);
      }
      case 'PUT SETOWNER': {
        const owner = p.owner || undefined;
        const group = p.group || undefined;
        if (!owner && !group) throw illegal('Both owner and group are empty.');
        const { node, path: real } = this.#resolve(path, user);
        if (!node) throw fnf(`File does not exist: ${path}`);
        if (user !== this.#o.superuser) {
          if (user !== node.owner) throw denied(`Permission denied. user=${user} is not the owner of inode=${real}`);
          if (owner && owner !== node.owner) throw denied(`User ${user} is not a super user (non-super user cannot change owner).`);
          if (group && !this.#groupsOf(user).includes(group)) throw denied(`User ${user} does not belong to ${group}`);
        }
        if (owner) node.owner = owner;
        if (group) node.group = group;
        return this.#ok(res);
      }
      case 'PUT SETTIMES': {
        const { node, path: real } = this.#resolve(path, user);
        if (!node) throw fnf(`File does not exist: ${path}`);
        this.#check(user, node, 2, real);
        const m = Number(p.modificationtime ?? -1);
        const a = Number(p.accesstime ?? -1);
        if (!Number.isInteger(m) || !Number.isInteger(a)) throw illegal(`Invalid value for webhdfs parameter "modificationtime": ${p.modificationtime}`);
        if (m !== -1) node.mtime = m;
        if (a !== -1) node.atime = a;
        return this.#ok(res);
      }
      case 'PUT CREATESYMLINK': {
        const target = p.destination;
        if (!target || !target.startsWith('/')) throw illegal(`Invalid parameter value: destination = "${target ?? ''}" is not an absolute path.`);
        if (!this.#o.symlinks) throw new RemoteError(400, 'UnsupportedOperationException', 'java.lang.UnsupportedOperationException', 'Symlinks not supported');
        const parent = p.createparent === 'true' ? this.#mkdirs(path, user, 0o755, true) : this.#lookup(path, user).parent;
        const { name, parentPath, node } = this.#lookup(path, user);
        if (!parent) throw fnf(`Parent directory doesn't exist: ${parentPath}`);
        if (node) throw ioe('FileAlreadyExistsException', 'org.apache.hadoop.fs', `${path} already exists`);
        this.#check(user, parent, 2, parentPath);
        this.#checkName(name, parentPath);
        const link = this.#newNode('SYMLINK', user, parent.group, 0o777);
        link.target = target;
        parent.children!.set(name, link);
        return this.#ok(res);
      }
      default:
        if (['GET', 'PUT', 'DELETE', 'POST'].includes(method) && !['OPEN', 'CREATE'].includes(op)) throw this.#unknownOp(method, op);
        throw illegal(`${op} is not supported`);
    }
  }

  async #dropData(n: INode): Promise<void> {
    if (n.data) await fsp.rm(n.data, { force: true });
    for (const c of n.children?.values() ?? []) await this.#dropData(c);
  }

  async #datanodeOp(req: IncomingMessage, res: ServerResponse, op: string, path: string, p: Record<string, string>, user: string): Promise<void> {
    if (!p.namenoderpcaddress) {
      req.resume();
      throw illegal('namenoderpcaddress is not specified.');
    }
    if (req.method === 'GET' && op === 'OPEN') {
      req.resume();
      this.datanodeRequests.OPEN++;
      const fault = this.#dnFaults.shift();
      if (fault === 'busy') {
        // The body a careless client would take for the file's content.
        const body = JSON.stringify({ RemoteException: { exception: 'RetriableException', javaClassName: 'org.apache.hadoop.ipc.RetriableException', message: 'BUSY: datanode has too many readers' } });
        res.writeHead(503, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
        return;
      }
      const { node } = this.#resolve(path, user);
      if (!node) throw fnf(`File does not exist: ${path}`);
      if (node.type !== 'FILE') throw fnf(`Path is not a file: ${path}`);
      this.#check(user, node, 4, path);
      const offset = Number(p.offset ?? 0);
      const end = p.length === undefined ? node.length : Math.min(node.length, offset + Number(p.length));
      const n = Math.max(0, end - offset);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n });
      if (n === 0) return void res.end();
      if (fault === 'cut') {
        const half = Math.max(1, Math.floor(n / 2));
        const buf = Buffer.alloc(half);
        const fh = await fsp.open(node.data!, 'r');
        try {
          await fh.read(buf, 0, half, offset);
        } finally {
          await fh.close();
        }
        res.write(buf, () => setTimeout(() => res.destroy(), 20));
        return;
      }
      await pipeline(createReadStream(node.data!, { start: offset, end: end - 1 }), res).catch(() => res.destroy());
      return;
    }
    if (req.method === 'PUT' && op === 'CREATE') {
      this.datanodeRequests.CREATE++;
      let parent: INode;
      let name: string;
      let existing: INode | undefined;
      try {
        const l = this.#lookup(path, user);
        parent = l.parent ?? this.#mkdirs(path, user, 0o755, true);
        name = l.name;
        existing = parent.children!.get(name);
        const parentPath = l.parent ? l.parentPath : path.slice(0, path.lastIndexOf('/')) || '/';
        if (!name) throw ioe('FileAlreadyExistsException', 'org.apache.hadoop.fs', `/ already exists as a directory`);
        if (existing?.type === 'DIRECTORY') throw ioe('FileAlreadyExistsException', 'org.apache.hadoop.fs', `${path} already exists as a directory`);
        if ((existing || this.#creating.has(path)) && p.overwrite !== 'true') throw ioe('FileAlreadyExistsException', 'org.apache.hadoop.fs', `${path} for client 127.0.0.1 already exists`);
        this.#check(user, parent, 2, parentPath);
        this.#checkName(name, parentPath);
      } catch (err) {
        // Answer at once, as the datanode does when the namenode refuses the create; the client is
        // still sending its body.
        req.resume();
        throw err;
      }
      const permission = this.#permissionParam(p.permission, 0o644) & ~this.#o.umask;
      const data = join(this.#dataDir, `blk_${this.#nextId++}`);
      const exclusive = p.overwrite !== 'true';
      if (exclusive) this.#creating.add(path);
      let length: number;
      try {
        await pipeline(req, createWriteStream(data));
        length = (await fsp.stat(data)).size;
      } catch {
        if (exclusive) this.#creating.delete(path);
        await fsp.rm(data, { force: true });
        return;
      }
      const node = this.#newNode('FILE', user, parent.group, permission);
      node.data = data;
      node.length = length;
      const old = parent.children!.get(name);
      // From the check at the start to here, the name was this create's (no await between the delete and the set).
      if (exclusive) this.#creating.delete(path);
      if (old && exclusive) {
        await fsp.rm(data, { force: true });
        throw ioe('FileAlreadyExistsException', 'org.apache.hadoop.fs', `${path} for client 127.0.0.1 already exists`);
      }
      parent.children!.set(name, node);
      parent.mtime = Date.now();
      if (old) await this.#dropData(old);
      res.writeHead(201, { location: `hdfs://localhost:8020${path.split('/').map(encodeURIComponent).join('/')}`, 'content-length': 0 }).end();
      return;
    }
    req.resume();
    throw illegal(`Invalid operation ${op}`);
  }
}
