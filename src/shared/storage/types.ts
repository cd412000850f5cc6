import type { Readable } from 'node:stream';
import type { MultipartUpload, PartData, UploadedPart, UploadRef } from './multipart.js';

/**
 * One key of a listing. Directories are keys ending in `/`; `size` of a directory is 0.
 * `mtime` is milliseconds since the epoch.
 */
export interface Entry {
  key: string;
  size: number;
  mtime: number;
  isDir: boolean;
  isSymlink?: boolean;
  /** The link's target, for symlinks listed without following them. */
  target?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  etag?: string;
  /**
   * The store saw this key but cannot read or write it (a directory it cannot read into, a name it
   * cannot address): a sync counts it as failed rather than passing over it.
   */
  error?: string;
  /**
   * Not a regular file, directory or symlink (a FIFO, socket or device): never read, never
   * written. Says what it is, for the warning ('FIFO', 'socket', 'character device', 'block device').
   */
  special?: string;
}

export interface ListOptions {
  /** Only keys starting with this string. */
  prefix?: string;
  /** Only keys after this one (exclusive), in UTF-8 byte order. */
  startAfter?: string;
  /** With '/', list one level: sub-prefixes come back as directory entries (`isDir`, key ending in '/'). */
  delimiter?: string;
  /** File-like stores: report what a symlink points to instead of the link itself. */
  followSymlinks?: boolean;
  /**
   * Tree stores: remove the temporary files (temp.ts) of writers that are gone, in the directories
   * the listing reads, and report each (the path shown to users and its size). Only a destination's
   * listing asks for this; without it temporaries are hidden and left alone.
   */
  reclaim?: (path: string, bytes: number) => void;
  /**
   * Tree stores: a directory key for which this says true is listed, but not read: nothing under
   * it is wanted (a filter excludes all of it). Stores that list by prefix may ignore it.
   */
  skipDir?: (key: string) => boolean;
  /**
   * `--list-cutoff`: a directory of more names than this is sorted on disk (sorted runs in a
   * temporary file, merged as the listing goes) instead of in memory. Stores that sort directories
   * themselves honour it; the default is 1,000,000.
   */
  listCutoff?: number;
  signal?: AbortSignal;
}

export interface GetOptions {
  offset?: number;
  /** Bytes to read from `offset`; omitted means to the end. */
  length?: number;
  /** The size the caller expects (from the listing): sizes read buffers, never limits the read. */
  sizeHint?: number;
  signal?: AbortSignal;
  /**
   * False (a sync with --links, which copies links as links): a name that is a symlink now, though
   * it was listed as a file (it was swapped since), is refused, never read through. Default true.
   */
  followSymlinks?: boolean;
}

export interface PutOptions {
  /**
   * The body's size when known; backends use it to choose single or multipart upload. It is
   * enforced: a body of another length fails with SourceChangedError and stores nothing.
   */
  size?: number;
  mtime?: number;
  mode?: number;
  storageClass?: string;
  /**
   * Create only: when the key already exists, write nothing and throw AlreadyExistsError. Only
   * where `features.exclusiveCreate`; two such puts racing for one key: exactly one succeeds, and
   * the key then holds its bytes whole. Anything at the key counts as there (in tree stores a
   * directory or a symlink too). Always written through a temporary or in one request, never in
   * place (`--inplace` does not apply). For file keys: a directory key (ending in '/') in a tree
   * store is made with mkdir, which does not look at it. put() only: copyFrom() does not honour it.
   */
  ifAbsent?: boolean;
  /** Long copies (copyFrom) report the bytes written so far, now and then, for progress. */
  onProgress?(bytes: number): void;
  signal?: AbortSignal;
}

export interface Attrs {
  mtime?: number;
  mode?: number;
  uid?: number;
  gid?: number;
}

/** Where a server-side copy reads from: opaque to everyone but the backend that made it. */
export interface CopySource {
  scope: string;
  location: unknown;
  /** As GetOptions.followSymlinks false: the copy refuses a source name that is a symlink now. */
  noFollow?: boolean;
}

/**
 * What a store can do beyond list/head/get/put/delete. Filled once at construction; callers test
 * this record, never the store's type.
 */
export interface Features {
  /**
   * Server-side copy between stores of the same `scope` (same endpoint and account). `local` means
   * the bytes still move through this machine (a disk-to-disk copy), so `--bwlimit` applies to it.
   */
  copy?: { scope: string; local?: boolean };
  /** Uploads in parts (`ObjectStore.multipart`), within these limits. */
  multipart?: { minPartSize: number; maxPartSize: number; maxParts: number };
  /** setAttrs() keeps these attributes; `mtime` also means listed mtimes are the ones set. */
  attrs?: {
    mode: boolean;
    owner: boolean;
    mtime: boolean;
    /**
     * The mtimes (ms since the epoch) the store can keep, when narrower than a JavaScript Date's:
     * SFTP v3 keeps unsigned 32-bit seconds. An mtime outside is written clamped to the range, and
     * the quick check compares the source's clamped the same way, so a second run copies nothing.
     */
    mtimeRange?: { min: number; max: number };
  };
  /** symlink() creates links and list() reports them with `isSymlink` and `target`. */
  symlinks?: boolean;
  /** Real directories: mkdir() creates them and they exist without content. */
  dirs?: boolean;
  /**
   * put() honours `ifAbsent` atomically (a conditional create, checked by the store itself): file
   * (link(2) of a temporary), mem, S3 (If-None-Match: *), OSS (x-oss-forbid-overwrite), COS
   * (x-cos-forbid-overwrite), SFTP (the v3 rename) and HDFS (rename2 without OVERWRITE). Where it is
   * absent a caller must not pass `ifAbsent`: nothing guarantees a store without it refuses.
   */
  exclusiveCreate?: boolean;
  /** put() without temporary names when the caller asks for it (`--inplace`). */
  inplace?: boolean;
  /**
   * Keys may hold raw bytes: a name that is not valid UTF-8 is listed, and accepted by every
   * method, as a key whose stray bytes are lone surrogates U+DC80..U+DCFF, one per byte (keys.ts
   * encodeKey/decodeKey). A key with a lone surrogate goes only to a store with this feature.
   */
  rawNames?: boolean;
}

/**
 * features.multipart: one object uploaded in parts, each step a call of its own on plain data, so
 * that the steps may run in different processes (the manager starts and completes an upload,
 * executors upload its parts). Parts may be uploaded in any order and at once; until `complete`
 * the key is as it was.
 */
export interface MultipartUploads {
  /**
   * Start an upload of `key`, `size` bytes in parts of `partSize` (every part but the last; part N
   * holds bytes [(N-1) * partSize, N * partSize) of the object). A part size or count outside
   * features.multipart is refused (FatalError) before anything is sent.
   */
  start(key: string, size: number, options: { partSize: number; storageClass?: string; signal?: AbortSignal }): Promise<MultipartUpload>;
  /**
   * Upload part `partNumber` (from 1). A stream body must be exactly `data.size` bytes: a shorter or
   * longer one fails with SourceChangedError and its part is not used. Uploading a part number again
   * replaces it (the ETag of the latest upload is the one `complete` wants).
   */
  uploadPart(upload: UploadRef, partNumber: number, data: PartData, options?: { signal?: AbortSignal }): Promise<UploadedPart>;
  /** Make the object from `parts` (each part number once, in any order): the key then holds it whole. */
  complete(upload: UploadRef, parts: UploadedPart[], options?: { signal?: AbortSignal }): Promise<void>;
  /** Discard the upload and its parts. An upload already gone (completed or aborted) is no error. */
  abort(upload: UploadRef): Promise<void>;
}

export interface ObjectStore {
  /** The registered scheme: 'file', 'mem', 's3', ... */
  readonly scheme: string;
  /** The address with secrets removed, for messages. */
  readonly description: string;
  readonly features: Features;

  /**
   * Pages of entries in UTF-8 byte order of the key. Throws ListOrderError if the source breaks it,
   * and AbortedError once `options.signal` has fired.
   */
  list(options?: ListOptions): AsyncIterable<Entry[]>;
  /** Throws NotFoundError when the key does not exist. */
  head(key: string, options?: { followSymlinks?: boolean; signal?: AbortSignal }): Promise<Entry>;
  /** The call, and reading the stream, fail with AbortedError once `options.signal` fires. */
  get(key: string, options?: GetOptions): Promise<Readable>;
  /**
   * Store `body` under `key`, whole or not at all: a failed put, one whose body is not its
   * announced `size` (SourceChangedError), or one interrupted by its signal (AbortedError) leaves
   * the key as it was, and no temporary or open multipart upload behind. (Written in place,
   * `features.inplace` with --inplace, a file holds what was written before the failure.)
   */
  put(key: string, body: Readable | Buffer, options?: PutOptions): Promise<void>;
  /**
   * Deleting a key that does not exist succeeds. Where directories are real (features.dirs), a
   * directory key removes an empty directory and fails with NotEmptyError when it holds entries;
   * elsewhere a directory key is a marker object, and only the marker is deleted.
   */
  delete(key: string, options?: { signal?: AbortSignal }): Promise<void>;

  /** features.dirs */
  mkdir?(key: string, options?: { mode?: number }): Promise<void>;
  /** features.symlinks */
  symlink?(key: string, target: string): Promise<void>;
  /** features.attrs */
  setAttrs?(key: string, attrs: Attrs, options?: { isSymlink?: boolean }): Promise<void>;
  /** features.copy: where a server-side copy of `key` would read from. */
  copySource?(key: string, options?: { followSymlinks?: boolean }): CopySource;
  /** features.copy: copy from a store of the same scope without moving the bytes through ferry. */
  copyFrom?(key: string, source: CopySource, options?: PutOptions & { size: number }): Promise<void>;
  /**
   * features.copy: many copyFrom()s at once, for stores where one call per key costs more than the
   * copy itself (local disks). One result per item, in order: undefined for success.
   */
  copyFromMany?(items: { key: string; source: CopySource; options: PutOptions & { size: number } }[]): Promise<(Error | undefined)[]>;
  /**
   * Small whole files read at once, for stores where a call per key costs more than the read (local
   * disks): the bytes of each, or why it could not be read (what get() would throw), in order.
   * `sizes`: the sizes a listing gave the keys, which are regular files there: a store may read
   * that much and look closer only at a file whose size differs; a key that is no longer a regular
   * file (a symlink, a FIFO, a device, a directory) fails. Callers without it get() each.
   */
  getMany?(keys: string[], options?: { signal?: AbortSignal; sizes?: number[] }): Promise<(Buffer | Error)[]>;
  /**
   * Small whole files written at once, for stores where a put() per key costs more than the write
   * (local disks): each as put() writes it (whole or not at all), `owner` set with it where
   * `features.attrs.owner` (ignored elsewhere). `ifAbsent` is refused. One result per item, in
   * order: undefined for success. Callers without it put() each.
   *
   * `fresh`, for a caller that fills a destination that was empty and that nothing else writes (a
   * restore): a store may create each file at its name, exclusively (what is there already fails
   * that file with AlreadyExistsError), without the temporary that makes a write whole or nothing.
   * A failed write removes what it wrote, but a killed process can leave a file cut short: the
   * caller says so where the next run will see it (load.ts, LOAD_MARKER).
   */
  putMany?(items: { key: string; body: Buffer; options: PutOptions; owner?: { uid: number; gid: number } }[], options?: { signal?: AbortSignal; fresh?: boolean }): Promise<(Error | undefined)[]>;
  /** features.multipart */
  readonly multipart?: MultipartUploads;
  /** Batched deletes; the caller falls back to delete() when absent. */
  deleteMany?(keys: string[], options?: { signal?: AbortSignal }): Promise<void>;
  close?(): Promise<void>;
}
