import type { UploadRef } from './multipart.js';
import type { CopySource, Entry, ListOptions, MultipartUploads, ObjectStore } from './types.js';

/**
 * A view of a store under a key prefix: key k of the view is `prefix + k` of the store. The view
 * keeps exactly the capabilities of what it wraps. Order is preserved because every key shares
 * the prefix.
 */
export function withPrefix(inner: ObjectStore, prefix: string): ObjectStore {
  const n = prefix.length;
  const strip = (page: Entry[]): Entry[] => {
    for (const e of page) e.key = e.key.slice(n);
    return page;
  };
  const view: ObjectStore = {
    scheme: inner.scheme,
    description: inner.description,
    features: inner.features,
    async *list(options: ListOptions = {}) {
      const o: ListOptions = { ...options, prefix: prefix + (options.prefix ?? '') };
      if (options.startAfter !== undefined) o.startAfter = prefix + options.startAfter;
      const skipDir = options.skipDir;
      if (skipDir) o.skipDir = (key) => key.length > n && key.startsWith(prefix) && skipDir(key.slice(n));
      for await (const page of inner.list(o)) yield strip(page);
    },
    async head(key, options) {
      const e = await inner.head(prefix + key, options);
      e.key = e.key.slice(n);
      return e;
    },
    get: (key, options) => inner.get(prefix + key, options),
    put: (key, body, options) => inner.put(prefix + key, body, options),
    delete: (key, options) => inner.delete(prefix + key, options),
    ...(inner.multipart ? { multipart: prefixedUploads(inner.multipart, prefix) } : {}),
  };
  if (inner.mkdir) view.mkdir = (key, o) => inner.mkdir!(prefix + key, o);
  if (inner.symlink) view.symlink = (key, target) => inner.symlink!(prefix + key, target);
  if (inner.setAttrs) view.setAttrs = (key, attrs, o) => inner.setAttrs!(prefix + key, attrs, o);
  if (inner.copySource) view.copySource = (key, options): CopySource => inner.copySource!(prefix + key, options);
  if (inner.copyFrom) view.copyFrom = (key, source, o) => inner.copyFrom!(prefix + key, source, o);
  if (inner.copyFromMany) view.copyFromMany = (items) => inner.copyFromMany!(items.map((i) => ({ ...i, key: prefix + i.key })));
  if (inner.deleteMany) view.deleteMany = (keys, o) => inner.deleteMany!(keys.map((k) => prefix + k), o);
  if (inner.close) view.close = () => inner.close!();
  return view;
}

/** Multipart uploads of a prefixed view: an upload's key is the view's, as every other key it hands out. */
function prefixedUploads(inner: MultipartUploads, prefix: string): MultipartUploads {
  const toInner = (u: UploadRef): UploadRef => ({ key: prefix + u.key, uploadId: u.uploadId });
  return {
    start: async (key, size, o) => {
      const u = await inner.start(prefix + key, size, o);
      return { ...u, key: u.key.slice(prefix.length) };
    },
    uploadPart: (u, n, data, o) => inner.uploadPart(toInner(u), n, data, o),
    complete: (u, parts, o) => inner.complete(toInner(u), parts, o),
    abort: (u) => inner.abort(toInner(u)),
  };
}
