import { InvalidDumpError } from '../../shared/errors.js';
import { countEntry, emptyCounters, type DumpCounters, type DumpEntry } from './entry.js';

/**
 * The namespace check `ferry load` runs over the whole input before it writes anything: every entry
 * of a dump or archive goes through `add`, in whatever order the input holds them (an archive written
 * by another tool has its own order, so nothing here relies on adjacency).
 *
 * Memory is bounded per entry and holds no names: each path (and each directory a path implies) is
 * kept as a 64-bit hash (two independent 32-bit hashes) with its kind and size, in an
 * open-addressing table in one typed array: 16 bytes a slot, at most ~2.9 slots an entry. Two different
 * paths with the same 64-bit hash would be taken for one (a false "duplicate"); among 10^7 paths
 * the odds are about 3 in 10^6.
 *
 * `add` throws InvalidDumpError naming the path and the rule it breaks; after a throw the check is
 * spent (the input is refused as a whole).
 */
export class NamespaceCheck {
  /** What the accepted entries hold, recomputed with countEntry. */
  readonly counters: DumpCounters = emptyCounters();

  /**
   * The table, one slot of 4 words each (one cache line holds 4 slots): the two hashes, then
   * kind | size's high 21 bits << 3, then size's low 32 bits. Kind 0 is an empty slot.
   */
  private slots: Int32Array<ArrayBuffer>;
  private mask: number;
  private used = 0;
  private rootSeen = false;

  /** Scratch for one path: the hash pair of each proper prefix ending before a '/', and where. */
  private prefixH1 = new Int32Array(64);
  private prefixH2 = new Int32Array(64);
  private prefixEnd = new Int32Array(64);
  private prefixes = 0;
  private lastH1 = 0;
  private lastH2 = 0;

  constructor(
    initialSlots = 1 << 14,
    /**
     * Symlinks may point anywhere (absolute targets, `..` out of the root): what a dump of a real
     * tree holds. Restored as links, never followed: entries below a symlink stay refused, and the
     * stores refuse writes through one. Off, such a link is refused (an archive from elsewhere).
     */
    readonly linksOutside = false,
  ) {
    let cap = 16;
    while (cap < initialSlots) cap *= 2;
    this.slots = new Int32Array(cap * 4);
    this.mask = cap - 1;
  }

  /**
   * A table size for about `entries` entries (and as many directories they imply), so that it need
   * not grow on the way (each growth rehashes every slot): at most 2^19 slots (8 MiB) from a guess.
   */
  static slotsFor(entries: number, guess = false): number {
    const slots = Math.ceil((entries * 1.2) / 0.7) + 1;
    return guess ? Math.min(slots, 1 << 19) : slots;
  }

  /** Bytes the table holds (its memory, whatever the names' lengths). */
  get tableBytes(): number {
    return this.slots.byteLength;
  }

  /** Bytes of the file at `path` among the entries added so far; undefined when it is not a file. */
  sizeOf(path: string): number | undefined {
    if (this.hashPath(path, false) !== undefined) return undefined;
    const s = this.find(this.lastH1, this.lastH2);
    return this.kindAt(s) === Kind.File ? this.sizeAt(s) : undefined;
  }

  add(e: DumpEntry): void {
    if (e === null || typeof e !== 'object') throw invalid('(entry)', 'an entry is not an object');
    const path = e.path;
    if (typeof path !== 'string') throw invalid(String(path), 'the path is not a string');
    const type = e.type as string;
    if (type !== 'file' && type !== 'dir' && type !== 'symlink') throw invalid(path, `unknown entry type ${JSON.stringify(type)}`);
    checkAttributes(e);

    if (path === '') {
      if (type !== 'dir') throw invalid(path, `the root must be a directory, not a ${type}`);
      if (this.rootSeen) throw invalid(path, 'the root appears twice');
      if (e.linkTo !== undefined || e.target !== undefined) throw invalid(path, 'the root cannot be a link');
      this.rootSeen = true;
      countEntry(this.counters, e);
      return;
    }

    const problem = this.hashPath(path, true);
    if (problem !== undefined) throw invalid(path, problem);
    const a = this.lastH1;
    const b = this.lastH2;
    if (type === 'symlink') {
      if (e.linkTo !== undefined) throw invalid(path, 'a symlink cannot also be a hard link');
      if (typeof e.target !== 'string' || e.target === '') throw invalid(path, 'a symlink without a target');
      const t = this.linksOutside ? (e.target.includes('\0') ? 'holds a NUL byte' : undefined) : targetProblem(path, e.target);
      if (t !== undefined) throw invalid(path, `symlink target ${JSON.stringify(e.target)} ${t}${this.linksOutside || t.includes('NUL') ? '' : ' (ferry load --outside-links restores such links, as links)'}`);
    } else if (e.target !== undefined) {
      throw invalid(path, `a ${type} with a symlink target`);
    }
    if (e.linkTo !== undefined) {
      if (type !== 'file') throw invalid(path, `a ${type} cannot be a hard link`);
      if (typeof e.linkTo !== 'string') throw invalid(path, 'a hard link target that is not a string');
      const lp = this.hashPath(e.linkTo, false);
      if (lp !== undefined) throw invalid(path, `hard link to ${JSON.stringify(e.linkTo)}, outside the root (${lp})`);
      const s = this.find(this.lastH1, this.lastH2);
      if (this.kindAt(s) !== Kind.File) throw invalid(path, `hard link to ${JSON.stringify(e.linkTo)}, which is not an earlier file of the dump`);
      const linkedSize = this.sizeAt(s);
      if (e.size !== linkedSize) throw invalid(path, `hard link of ${e.size} bytes to ${JSON.stringify(e.linkTo)} of ${linkedSize} bytes`);
    }

    const own = this.find(a, b);
    const seen = this.kindAt(own);
    const kind = type === 'dir' ? Kind.Dir : type === 'file' ? Kind.File : Kind.Symlink;

    if (seen !== Kind.Empty) {
      if (kind === Kind.Dir && seen === Kind.ImpliedDir) {
        // The directory was implied by an entry below it; its ancestors are in the table already.
        this.slots[own * 4 + 2] = Kind.Dir;
        countEntry(this.counters, e);
        return;
      }
      if (kind === seen) throw invalid(path, 'appears twice (duplicate path)');
      const was = seen === Kind.ImpliedDir ? 'a directory (entries lie below it)' : `a ${KIND_NAME[seen]}`;
      throw invalid(path, `is both ${was} and a ${KIND_NAME[kind]}`);
    }

    // The ancestors, deepest first, down to the first one already known as a directory (whose own
    // ancestors were registered with it).
    let missingFrom = this.prefixes;
    for (let j = this.prefixes - 1; j >= 0; j--) {
      const s = this.find(this.prefixH1[j]!, this.prefixH2[j]!);
      const k = this.kindAt(s);
      if (k === Kind.Empty) {
        missingFrom = j;
        continue;
      }
      const ancestor = path.slice(0, this.prefixEnd[j]);
      if (k === Kind.File) throw invalid(path, `lies below ${JSON.stringify(ancestor)}, which is a file (both file and directory)`);
      if (k === Kind.Symlink) throw invalid(path, `lies below ${JSON.stringify(ancestor)}, which is a symlink (it would be written through the link)`);
      break;
    }
    for (let j = missingFrom; j < this.prefixes; j++) this.insert(this.prefixH1[j]!, this.prefixH2[j]!, Kind.ImpliedDir, 0);
    this.insert(a, b, kind, type === 'file' ? e.size : 0);
    countEntry(this.counters, e);
  }

  /**
   * Checks that `path` is a path below the root (the reason when it is not) and hashes it into
   * lastH1/lastH2 (and, with `prefixes`, every proper prefix ending before a '/' into the scratch
   * arrays), in one pass: FNV-1a and a multiply-rotate hash over UTF-16 code units, each finished with
   * murmur3's fmix32. The two share no multiplier, so they are independent enough for a 64-bit identity.
   */
  private hashPath(path: string, prefixes: boolean): string | undefined {
    const n = path.length;
    if (n === 0) return 'an empty path';
    let a = 0x811c9dc5 | 0;
    let b = 0x9747b28c | 0;
    let k = 0;
    let start = 0;
    for (let i = 0; i < n; i++) {
      const c = path.charCodeAt(i);
      if (c === 0x2f) {
        const problem = componentProblem(path, start, i);
        if (problem !== undefined) return problem;
        if (prefixes) {
          if (k === this.prefixH1.length) this.growPrefixes();
          this.prefixH1[k] = fmix(a ^ i);
          this.prefixH2[k] = fmix(b + i);
          this.prefixEnd[k] = i;
          k++;
        }
        start = i + 1;
      } else if (c === 0) return 'a NUL byte in the path';
      a = Math.imul(a ^ c, 0x01000193);
      b = Math.imul(b + c, 0x9e3779b1);
      b = (b << 13) | (b >>> 19);
    }
    if (start === n) return "a path ending in '/'";
    const problem = componentProblem(path, start, n);
    if (problem !== undefined) return problem;
    if (prefixes) this.prefixes = k;
    this.lastH1 = fmix(a ^ n);
    this.lastH2 = fmix(b + n);
    return undefined;
  }

  private growPrefixes(): void {
    const grow = (x: Int32Array<ArrayBuffer>): Int32Array<ArrayBuffer> => {
      const y = new Int32Array(x.length * 2);
      y.set(x);
      return y;
    };
    this.prefixH1 = grow(this.prefixH1);
    this.prefixH2 = grow(this.prefixH2);
    this.prefixEnd = grow(this.prefixEnd);
  }

  private kindAt(s: number): Kind {
    return (this.slots[s * 4 + 2]! & 7) as Kind;
  }

  private sizeAt(s: number): number {
    return (this.slots[s * 4 + 2]! >>> 3) * 2 ** 32 + (this.slots[s * 4 + 3]! >>> 0);
  }

  /** The slot holding (a, b), or the empty slot where it would go (linear probing). */
  private find(a: number, b: number): number {
    const t = this.slots;
    const mask = this.mask;
    let s = (a ^ Math.imul(b, 0x27d4eb2d)) & mask;
    for (;;) {
      const i = s * 4;
      if ((t[i + 2]! & 7) === Kind.Empty || (t[i] === a && t[i + 1] === b)) return s;
      s = (s + 1) & mask;
    }
  }

  private insert(a: number, b: number, kind: Kind, size: number): void {
    const i = this.find(a, b) * 4;
    this.slots[i] = a;
    this.slots[i + 1] = b;
    this.slots[i + 2] = (Math.floor(size / 2 ** 32) << 3) | kind;
    this.slots[i + 3] = size | 0;
    if (++this.used * 10 > (this.mask + 1) * 7) this.grow();
  }

  private grow(): void {
    const old = this.slots;
    this.slots = new Int32Array(old.length * 2);
    this.mask = this.mask * 2 + 1;
    for (let i = 0; i < old.length; i += 4) {
      if ((old[i + 2]! & 7) === Kind.Empty) continue;
      const j = this.find(old[i]!, old[i + 1]!) * 4;
      this.slots[j] = old[i]!;
      this.slots[j + 1] = old[i + 1]!;
      this.slots[j + 2] = old[i + 2]!;
      this.slots[j + 3] = old[i + 3]!;
    }
  }
}

const enum Kind {
  Empty = 0,
  /** A directory no entry names but some entry lies below (an archive need not list directories). */
  ImpliedDir = 1,
  Dir = 2,
  File = 3,
  Symlink = 4,
}

const KIND_NAME = ['', 'directory', 'directory', 'file', 'symlink'] as const;

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

function invalid(path: string, rule: string): InvalidDumpError {
  return new InvalidDumpError(`invalid dump entry ${JSON.stringify(path)}: ${rule}`);
}

/** Why the component path[start, end) cannot be part of a path below the root, or undefined. */
function componentProblem(path: string, start: number, end: number): string | undefined {
  const len = end - start;
  if (len > 2) return undefined;
  if (len === 0) return start === 0 ? 'an absolute path (it would leave the root)' : "an empty component ('//') in the path";
  if (path.charCodeAt(start) !== 0x2e) return undefined;
  if (len === 1) return "a '.' component in the path";
  return path.charCodeAt(start + 1) === 0x2e ? "a '..' component in the path (it would leave the root)" : undefined;
}

/**
 * Why a symlink at `path` with `target` could lead outside the root, or undefined. The target is
 * resolved lexically from the link's directory (whose ancestors are real directories: nothing may
 * lie below a symlink). A '..' after a name is refused too: that name may itself be a symlink, and
 * lexical resolution through it would be wrong (`d/l -> ..`, `x -> d/l/..` leaves the root). With
 * that rule, following any chain of accepted links stays below the root.
 */
export function targetProblem(path: string, target: string): string | undefined {
  if (target.includes('\0')) return 'holds a NUL byte';
  if (target.startsWith('/')) return 'is absolute (it points outside the root)';
  let depth = 0;
  for (let i = 0; i < path.length; i++) if (path.charCodeAt(i) === 0x2f) depth++;
  let descended = false;
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (descended) return "has '..' after a name (it may pass through another link)";
      if (--depth < 0) return 'resolves outside the root';
    } else descended = true;
  }
  return undefined;
}

function checkAttributes(e: DumpEntry): void {
  const bad = (what: string): InvalidDumpError => invalid(e.path, what);
  if (typeof e.size !== 'number' || !Number.isSafeInteger(e.size) || e.size < 0) {
    throw bad(`bad size ${JSON.stringify(e.size)} (a size is a whole number of bytes, 0 to 2^53-1)`);
  }
  if (e.type !== 'file' && e.size !== 0) throw bad(`a ${e.type} of ${e.size} bytes (only files hold bytes)`);
  if (e.mode !== undefined && (!Number.isInteger(e.mode) || e.mode < 0 || e.mode > 0o7777)) throw bad(`bad mode ${JSON.stringify(e.mode)}`);
  if (e.mtime !== undefined && (typeof e.mtime !== 'number' || !Number.isFinite(e.mtime))) throw bad(`bad mtime ${JSON.stringify(e.mtime)}`);
  if (e.uid !== undefined && (!Number.isSafeInteger(e.uid) || e.uid < 0)) throw bad(`bad uid ${JSON.stringify(e.uid)}`);
  if (e.gid !== undefined && (!Number.isSafeInteger(e.gid) || e.gid < 0)) throw bad(`bad gid ${JSON.stringify(e.gid)}`);
}
