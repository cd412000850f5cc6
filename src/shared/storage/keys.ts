/**
 * Key order is UTF-8 byte order (S3's order). For well-formed strings that is code-point order,
 * which differs from JavaScript's UTF-16 `<` only where a surrogate (U+D800..U+DFFF, used for
 * characters above U+FFFF) meets a code unit in U+E000..U+FFFF.
 */
export function compareKeys(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  if (i === n) return a.length - b.length;
  const x = a.charCodeAt(i);
  const y = b.charCodeAt(i);
  const xs = x >= 0xd800 && x <= 0xdfff;
  const ys = y >= 0xd800 && y <= 0xdfff;
  // A surrogate stands for a code point above U+FFFF, greater than any code unit outside the range.
  if (xs !== ys) return xs ? 1 : -1;
  return x - y;
}

/** True when the key lies under `dir` (a key ending in '/'). */
export function isUnder(key: string, dir: string): boolean {
  return key.length > dir.length && key.startsWith(dir);
}

/** The parent directory key of a key ('a/b/c' → 'a/b/', 'a/b/' → 'a/', 'a' → ''). */
export function parentKey(key: string): string {
  const end = key.endsWith('/') ? key.length - 1 : key.length;
  const i = key.lastIndexOf('/', end - 1);
  return i < 0 ? '' : key.slice(0, i + 1);
}

/**
 * Why a key cannot name a path in a directory tree, or undefined when it can. Tree stores (file,
 * sftp, hdfs) refuse such keys in every method: '..' would leave the root, and '', '.', a leading
 * '/' or 'a//b' would give one file two keys (a sync would copy it and delete it as "extra").
 * Object stores hold such keys, so they reach tree stores from S3, OSS, COS and --files-from.
 */
export function treeKeyProblem(key: string): string | undefined {
  // One pass over the characters, no allocation: this runs for every key a tree store touches.
  const n = key.length;
  let start = 0;
  for (let i = 0; i <= n; i++) {
    const c = i < n ? key.charCodeAt(i) : 47; // a '/' after the end closes the last segment
    if (c === 0) return 'it contains a NUL character';
    if (c !== 47) continue;
    const len = i - start;
    if (len === 0 && i < n) return i === 0 ? "it starts with '/'" : "it has an empty segment ('//')";
    if (len === 1 && key.charCodeAt(start) === 46) return "it has a '.' segment";
    if (len === 2 && key.charCodeAt(start) === 46 && key.charCodeAt(start + 1) === 46) return "it has a '..' segment, which would leave the destination";
    start = i + 1;
  }
  return undefined;
}
