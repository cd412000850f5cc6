/**
 * s3rver, made to check what real S3 checks where s3rver itself does not:
 * - SigV4 signatures are verified (s3rver accepts any V4 signature of a known access key): a wrong
 *   secret gets 403 SignatureDoesNotMatch, an unknown key 403 InvalidAccessKeyId. Unsigned requests
 *   may read (a public-read bucket) but not write (403 AccessDenied).
 * - Listings come in UTF-8 byte order of the key (s3rver walks its directory tree, which puts
 *   'a/x' before 'a-b', and compares with UTF-16 `<`).
 * - CompleteMultipartUpload refuses parts under 5 MiB but the last (EntityTooSmall), parts out of
 *   order (InvalidPartOrder) and unknown ETags (InvalidPart).
 * - AbortMultipartUpload and UploadPartCopy, which s3rver lacks, are implemented; a part for an
 *   upload that is not open (aborted, completed, never started) gets 404 NoSuchUpload.
 * - x-amz-copy-source is percent-decoded as S3 does (s3rver's decodeURI leaves '%23' and such).
 * - A PutObject whose client went away mid-body stores nothing (s3rver kept the bytes that came).
 * - If-None-Match: * on PutObject (a copy too) and CompleteMultipartUpload is a conditional create,
 *   as S3 has it since 2024 (s3rver ignores the header): 412 PreconditionFailed when the key
 *   exists, 409 ConditionalRequestConflict while another conditional write of the key is under way.
 *   The check and the claim happen in one turn of the event loop: of racing writers one wins.
 * The payload hash (x-amz-content-sha256) is not verified.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { createReadStream, existsSync, promises as fsp, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';

const require = createRequire(import.meta.url);

interface S3ErrorCtor {
  new (code: string, message?: string, detail?: Record<string, unknown>): Error;
}
interface StoredObject {
  key: string;
  content: Readable | null;
  size: number;
  range?: { start: number; end: number };
}
interface FsStore {
  getBucketPath(bucket: string): string;
  getResourcePath(bucket: string, key: string | undefined, resource: string): string;
  getMetadata(bucket: string, key: string): Promise<Record<string, string>>;
  getBucket(bucket: string): Promise<unknown>;
  getObject(bucket: string, key: string, options?: { start?: number; end?: number }): Promise<StoredObject | null>;
  putObject(object: StoredObject & { bucket: string }): Promise<{ md5: string; size: number }>;
  putPart(bucket: string, uploadId: string, partNumber: number, content: Readable): Promise<{ md5: string; size: number }>;
  putObjectMultipart(bucket: string, uploadId: string, parts: { number: number; etag: string }[]): Promise<{ md5: string; size: number }>;
  putBucket(bucket: string): Promise<unknown>;
  deleteObject(bucket: string, key: string): Promise<void>;
}
interface KoaContext {
  method: string;
  path: string;
  originalUrl: string;
  query: Record<string, string | string[] | undefined>;
  headers: IncomingHttpHeaders;
  req: IncomingMessage;
  status: number;
  body: unknown;
  store: FsStore;
  get(name: string): string;
}
type Middleware = (ctx: KoaContext, next: () => Promise<void>) => Promise<void>;
interface S3rverInstance {
  store: FsStore;
  context: { store: FsStore };
  middleware: Middleware[];
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}

const S3rver = require('s3rver') as new (options: Record<string, unknown>) => S3rverInstance;
const FilesystemStore = require('s3rver/lib/stores/filesystem') as new (directory: string) => FsStore;
const S3Error = require('s3rver/lib/models/error') as S3ErrorCtor;
const S3Object = require('s3rver/lib/models/object') as new (bucket: string, key: string, content: null, metadata: Record<string, string>) => StoredObject;
const { DUMMY_ACCOUNT } = require('s3rver/lib/models/account') as { DUMMY_ACCOUNT: { createKeyPair(ak: string, sk: string): void } };

const OBJECT_SUFFIX = '._S3rver_object';
const UPLOADS = '._S3rver_uploads';
const MIN_PART = 5 * 1024 * 1024;

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** s3rver's file-system store, listing in S3's order (UTF-8 bytes) and checking multipart parts. */
class S3OrderStore extends FilesystemStore {
  #keys(bucket: string): string[] {
    const root = this.getBucketPath(bucket);
    const out: string[] = [];
    const walk = (dir: string, rel: string): void => {
      for (const d of readdirSync(dir, { withFileTypes: true })) {
        if (d.isDirectory()) {
          if (rel === '' && d.name === UPLOADS) continue;
          walk(join(dir, d.name), rel + d.name + '/');
        } else if (d.name.endsWith(OBJECT_SUFFIX)) out.push(rel + d.name.slice(0, -OBJECT_SUFFIX.length));
      }
    };
    walk(root, '');
    return out.sort(byteOrder);
  }

  /** Like S3: keys after `startAfter` in byte order, roll-ups by delimiter; only objects count toward maxKeys (s3rver makes its continuation token from the last object). */
  async listObjects(bucket: string, options: { delimiter?: string; startAfter?: string; prefix?: string; maxKeys?: number }): Promise<{ objects: StoredObject[]; commonPrefixes: string[]; isTruncated: boolean }> {
    const { delimiter = '', startAfter = '', prefix = '', maxKeys = Infinity } = options;
    const keys: string[] = [];
    const commonPrefixes: string[] = [];
    let isTruncated = false;
    for (const key of this.#keys(bucket)) {
      if (!key.startsWith(prefix) || byteOrder(key, startAfter) <= 0) continue;
      if (delimiter) {
        const i = key.indexOf(delimiter, prefix.length);
        if (i >= 0) {
          const common = key.slice(0, i + delimiter.length);
          if (commonPrefixes[commonPrefixes.length - 1] !== common) commonPrefixes.push(common);
          continue;
        }
      }
      if (keys.length >= maxKeys) {
        isTruncated = true;
        break;
      }
      keys.push(key);
    }
    const objects = await Promise.all(keys.map(async (key) => new S3Object(bucket, key, null, await this.getMetadata(bucket, key))));
    return { objects, commonPrefixes, isTruncated };
  }

  /** s3rver answers `Range: bytes=0-0` with the whole object (it reads the end 0 as "none"). */
  override async getObject(bucket: string, key: string, options?: { start?: number; end?: number }): Promise<StoredObject | null> {
    const object = await super.getObject(bucket, key, options);
    if (object?.content && object.range && options?.end === 0) {
      object.content.destroy();
      object.content = createReadStream(this.getResourcePath(bucket, key, 'object'), { start: 0, end: 0 });
      object.range.end = 0;
    }
    return object;
  }

  /**
   * s3rver waits forever on a body whose client went away mid-way, with the bytes that came already
   * in the object's file (so the key exists); S3 stores nothing of an incomplete body. The body is
   * taken whole first, and only a complete one is stored.
   */
  override async putObject(object: StoredObject & { bucket: string }): Promise<{ md5: string; size: number }> {
    const content = object.content as (Readable & { complete?: boolean }) | null;
    if (typeof content?.complete !== 'boolean') return super.putObject(object);
    const body = await new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      content.on('data', (c: Buffer) => chunks.push(c));
      content.once('end', () => resolve(Buffer.concat(chunks)));
      content.once('error', () => {});
      content.once('close', () => {
        if (!content.complete) reject(new S3Error('IncompleteBody', 'You did not provide the number of bytes specified by the Content-Length HTTP header.'));
      });
    });
    // s3rver answers before a Buffer body is on disk (it does not wait for the file's write): give it a stream, and wait for the file.
    (object as { content: unknown }).content = Readable.from([body]);
    const stored = await super.putObject(object);
    const file = this.getResourcePath(object.bucket, object.key, 'object');
    for (let i = 0; i < 200 && (await fsp.stat(file).then((st) => st.size, () => -1)) !== body.length; i++) await new Promise((r) => setTimeout(r, 5));
    return stored;
  }

  /** s3rver removes emptied directories after a delete; parallel deletes in one directory race on that. */
  override async deleteObject(bucket: string, key: string): Promise<void> {
    await super.deleteObject(bucket, key).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }

  override async putObjectMultipart(bucket: string, uploadId: string, parts: { number: number; etag: string }[]): Promise<{ md5: string; size: number }> {
    const dir = join(this.getResourcePath(bucket, undefined, 'uploads'), uploadId);
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (i > 0 && p.number <= parts[i - 1]!.number) throw new S3Error('InvalidPartOrder', 'The list of parts was not in ascending order. The parts list must be specified in order by part number.');
      const md5 = await fsp.readFile(join(dir, `${p.number}.md5`), 'utf8').catch(() => undefined);
      if (md5 === undefined || md5 !== p.etag) throw new S3Error('InvalidPart', 'One or more of the specified parts could not be found.', { PartNumber: p.number });
      const { size } = await fsp.stat(join(dir, String(p.number)));
      if (i < parts.length - 1 && size < MIN_PART) throw new S3Error('EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed object size.', { ProposedSize: size, MinSizeAllowed: MIN_PART, PartNumber: p.number });
    }
    return super.putObjectMultipart(bucket, uploadId, parts);
  }
}

const rfc3986 = (s: string): string => encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');
const hmac = (key: Buffer | string, s: string): Buffer => createHmac('sha256', key).update(s).digest();

/** The AWS Signature Version 4 check of an Authorization header, as S3 does it. */
function verifySigV4(ctx: KoaContext, secrets: Map<string, string>): void {
  const auth = ctx.get('authorization');
  const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request,\s*SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})$/.exec(auth);
  if (!m) throw new S3Error('AuthorizationHeaderMalformed', 'The authorization header is malformed.');
  const [, accessKey = '', date = '', region = '', service = '', signedHeaders = '', signature = ''] = m;
  const secret = secrets.get(accessKey);
  if (secret === undefined) throw new S3Error('InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.', { AWSAccessKeyId: accessKey });
  const amzDate = ctx.get('x-amz-date');
  const payloadHash = ctx.get('x-amz-content-sha256');
  if (!payloadHash) throw new S3Error('InvalidRequest', 'Missing required header for this request: x-amz-content-sha256');
  const [rawPath = '/', rawQuery = ''] = ctx.originalUrl.split(/\?(.*)/s);
  const query = rawQuery
    .split('&')
    .filter((p) => p !== '')
    .map((p) => {
      const i = p.indexOf('=');
      const k = decodeURIComponent(i < 0 ? p : p.slice(0, i));
      const v = i < 0 ? '' : decodeURIComponent(p.slice(i + 1));
      return [rfc3986(k), rfc3986(v)] as const;
    })
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const names = signedHeaders.split(';');
  const headers = names.map((h) => `${h}:${String(ctx.headers[h] ?? '').trim().replace(/\s+/g, ' ')}\n`).join('');
  const canonical = [ctx.method, rawPath, query, headers, signedHeaders, payloadHash].join('\n');
  const scope = `${date}/${region}/${service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n');
  const key = hmac(hmac(hmac(hmac('AWS4' + secret, date), region), service), 'aws4_request');
  const expected = hmac(key, toSign);
  if (!timingSafeEqual(expected, Buffer.from(signature, 'hex'))) {
    throw new S3Error('SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your key and signing method.', { AWSAccessKeyId: accessKey });
  }
}

function pathParts(ctx: KoaContext): { bucket: string; key: string } | undefined {
  const m = /^\/([^/]+)\/(.+)$/s.exec(ctx.path);
  if (!m) return undefined;
  return { bucket: decodeURIComponent(m[1]!), key: m[2]!.split('/').map(decodeURIComponent).join('/') };
}

function parseCopySource(header: string): { bucket: string; key: string } {
  const s = header.startsWith('/') ? header.slice(1) : header;
  const i = s.indexOf('/');
  if (i < 0) throw new S3Error('InvalidArgument', 'Copy Source must mention the source bucket and key: sourcebucket/sourcekey');
  return { bucket: decodeURIComponent(s.slice(0, i)), key: s.slice(i + 1).split('/').map(decodeURIComponent).join('/') };
}

/** Wait for a request's body to end, so that the client sees an early answer and not a reset. */
function drain(req: IncomingMessage): Promise<void> {
  return new Promise<void>((resolve) => {
    req.once('end', resolve);
    req.once('close', resolve);
    req.resume();
  });
}

/** An S3 error with a status s3rver's table lacks. */
function s3Error(status: number, code: string, message: string): Error {
  return Object.assign(new S3Error(code, message), { status, expose: true });
}

/**
 * Counts what was stored: objects (a PUT of a whole object, or the completion of a multipart
 * upload) by `bucket/key`, parts (UploadPart, UploadPartCopy) by `bucket/key#partNumber`. Counted
 * when the request succeeded: a PUT whose client went away mid-body stored nothing.
 */
function countWrites(writes: Map<string, number>, partWrites: Map<string, number>): Middleware {
  return async (ctx, next) => {
    await next();
    const target = pathParts(ctx);
    if (!target?.key || ctx.status < 200 || ctx.status >= 300) return;
    if ((ctx.method === 'PUT' && !('partNumber' in ctx.query)) || (ctx.method === 'POST' && 'uploadId' in ctx.query)) {
      const id = `${target.bucket}/${target.key}`;
      writes.set(id, (writes.get(id) ?? 0) + 1);
    } else if (ctx.method === 'PUT' && 'partNumber' in ctx.query && 'uploadId' in ctx.query) {
      const id = `${target.bucket}/${target.key}#${String(ctx.query['partNumber'])}`;
      partWrites.set(id, (partWrites.get(id) ?? 0) + 1);
    }
  };
}

function s3Checks(secrets: Map<string, string>): Middleware {
  /** Keys (bucket/key) with a conditional write under way. */
  const creating = new Set<string>();
  return async (ctx, next) => {
    const auth = ctx.get('authorization');
    if (auth) verifySigV4(ctx, secrets);
    else if (!('X-Amz-Algorithm' in ctx.query) && ctx.method !== 'GET' && ctx.method !== 'HEAD') throw new S3Error('AccessDenied', 'Access Denied');

    const target = pathParts(ctx);
    const copySource = ctx.get('x-amz-copy-source');
    const ifNoneMatch = ctx.get('if-none-match');
    const writesObject = (ctx.method === 'PUT' && !('partNumber' in ctx.query)) || (ctx.method === 'POST' && 'uploadId' in ctx.query);
    if (target?.key && ifNoneMatch && writesObject) {
      const id = `${target.bucket}/${target.key}`;
      if (ifNoneMatch !== '*') {
        await drain(ctx.req);
        throw new S3Error('NotImplemented', 'A header you provided implies functionality that is not implemented', { Header: 'If-None-Match' });
      }
      // No await between the check and the claim: one turn of the event loop decides.
      const conflict = creating.has(id) ? 'conflict' : existsSync(ctx.store.getResourcePath(target.bucket, target.key, 'object')) ? 'exists' : undefined;
      if (conflict) {
        await drain(ctx.req);
        if (conflict === 'conflict') throw s3Error(409, 'ConditionalRequestConflict', 'A conflicting conditional operation is currently in progress against this resource. Please try again.');
        throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', { Condition: 'If-None-Match' });
      }
      creating.add(id);
      try {
        return await s3Rest(ctx, next, target, copySource);
      } finally {
        creating.delete(id);
      }
    }
    await s3Rest(ctx, next, target, copySource);
  };
}

/** The checks of s3Checks that come after the conditional create's claim. */
async function s3Rest(ctx: KoaContext, next: () => Promise<void>, target: { bucket: string; key: string } | undefined, copySource: string): Promise<void> {
  if (target && ctx.method === 'DELETE' && 'uploadId' in ctx.query) {
    const dir = join(ctx.store.getResourcePath(target.bucket, undefined, 'uploads'), String(ctx.query['uploadId']));
    const exists = await fsp.stat(dir).then(() => true, () => false);
    if (!exists) throw new S3Error('NoSuchUpload', 'The specified upload does not exist.', { UploadId: ctx.query['uploadId'] });
    await fsp.rm(dir, { recursive: true, force: true });
    ctx.status = 204;
    return;
  }
  if (target && ctx.method === 'PUT' && copySource && 'uploadId' in ctx.query && 'partNumber' in ctx.query) {
    const src = parseCopySource(copySource);
    if (!(await ctx.store.getBucket(src.bucket))) throw new S3Error('NoSuchBucket', 'The specified bucket does not exist', { BucketName: src.bucket });
    const dir = join(ctx.store.getResourcePath(target.bucket, undefined, 'uploads'), String(ctx.query['uploadId']));
    if (!(await fsp.stat(dir).then(() => true, () => false))) throw new S3Error('NoSuchUpload', 'The specified upload does not exist.');
    const head = await ctx.store.getObject(src.bucket, src.key);
    if (!head) throw new S3Error('NoSuchKey', 'The specified key does not exist.', { Key: src.key });
    head.content?.destroy();
    let start = 0;
    let end = head.size - 1;
    const range = ctx.get('x-amz-copy-source-range');
    if (range) {
      const r = /^bytes=(\d+)-(\d+)$/.exec(range);
      if (!r) throw new S3Error('InvalidArgument', 'The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy');
      start = Number(r[1]);
      end = Number(r[2]);
      if (start > end || end >= head.size) throw new S3Error('InvalidRange', 'The requested range is not satisfiable', { RangeRequested: range, ActualObjectSize: head.size });
    }
    const obj = await ctx.store.getObject(src.bucket, src.key, { start, end });
    const { md5 } = await ctx.store.putPart(target.bucket, String(ctx.query['uploadId']), Number(ctx.query['partNumber']), obj!.content!);
    ctx.body = { CopyPartResult: { LastModified: new Date().toISOString(), ETag: JSON.stringify(md5) } };
    return;
  }
  if (target && ctx.method === 'PUT' && !copySource && 'uploadId' in ctx.query && 'partNumber' in ctx.query) {
    // s3rver takes a part for any upload id, even one aborted or completed (it makes the directory again); S3 refuses it.
    const dir = join(ctx.store.getResourcePath(target.bucket, undefined, 'uploads'), String(ctx.query['uploadId']));
    if (!(await fsp.stat(join(dir, 'key')).then(() => true, () => false))) {
      // Read the body first, as S3 does, so the client sees the answer and not a reset.
      await drain(ctx.req);
      throw new S3Error('NoSuchUpload', 'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.', { UploadId: ctx.query['uploadId'] });
    }
  }
  if (target && ctx.method === 'PUT' && copySource) {
    // s3rver decodes with decodeURI: hand it a header that decodeURI turns into the exact key.
    const src = parseCopySource(copySource);
    ctx.headers['x-amz-copy-source'] = encodeURI(`${src.bucket}/${src.key}`);
  }
  await next();
}

export interface S3TestServer {
  /** `127.0.0.1:PORT` of s3rver itself. */
  endpoint: string;
  port: number;
  directory: string;
  accessKey: string;
  secretKey: string;
  createBucket(name: string): Promise<void>;
  /** Objects written so far (whole PUTs and completed multipart uploads), by `bucket/key`. */
  writes: Map<string, number>;
  /** Parts uploaded so far (whatever became of their upload), by `bucket/key#partNumber`. */
  partWrites: Map<string, number>;
  /** Multipart uploads of `bucket` started and neither completed nor aborted. */
  pendingUploads(bucket: string): Promise<number>;
  close(): Promise<void>;
}

/**
 * Start s3rver on 127.0.0.1 (or `address`: a bridge address that test hosts in network namespaces
 * reach) with the checks above; the access key S3RVER has the secret S3RVER.
 */
export async function startS3Server(options: { credentials?: Record<string, string>; address?: string } = {}): Promise<S3TestServer> {
  const directory = await fsp.mkdtemp(join(tmpdir(), 'ferry-s3rver-'));
  const secrets = new Map(Object.entries({ S3RVER: 'S3RVER', ...options.credentials }));
  for (const [ak, sk] of secrets) DUMMY_ACCOUNT.createKeyPair(ak, sk);
  const address = options.address ?? '127.0.0.1';
  const server = new S3rver({ address, port: 0, silent: true, directory });
  const store = new S3OrderStore(directory);
  server.store = server.context.store = store;
  // Before the router (last), after s3rver's XML encoder: thrown S3Errors become S3's XML errors.
  const writes = new Map<string, number>();
  const partWrites = new Map<string, number>();
  server.middleware.splice(server.middleware.length - 1, 0, countWrites(writes, partWrites), s3Checks(secrets));
  const { port } = await server.run();
  return {
    endpoint: `${address}:${port}`,
    port,
    directory,
    writes,
    partWrites,
    accessKey: 'S3RVER',
    secretKey: 'S3RVER',
    createBucket: async (name) => void (await store.putBucket(name)),
    pendingUploads: async (bucket) => {
      // An upload is a directory with its key file; a part arriving after the abort can make the directory again, without it.
      const dir = store.getResourcePath(bucket, undefined, 'uploads');
      const ids = await fsp.readdir(dir).catch(() => [] as string[]);
      const live = await Promise.all(ids.map((id) => fsp.stat(join(dir, id, 'key')).then(() => true, () => false)));
      return live.filter(Boolean).length;
    },
    close: async () => {
      await server.close();
      await fsp.rm(directory, { recursive: true, force: true });
    },
  };
}
