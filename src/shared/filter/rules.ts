/**
 * `--include` / `--exclude` patterns, rsync style.
 *
 * Contract of the default (layered) mode, as rsync applies its filter list while it recurses: the
 * key's path components are visited from the top ("a", then "a/b", then "a/b/c"); at each level the
 * first rule that matches decides — exclude drops the key, include moves on to the next level — and
 * a level no rule matches moves on too. A key whose every level passed is kept. Every level above
 * the last is a directory, and so is the last one of a key ending in '/'. Because a directory key
 * "a/b/" passes exactly the levels that every key under it starts with, a dropped directory key
 * means its whole subtree is dropped: a lister may prune there.
 *
 * With `matchFullPath` (juicefs's --match-full-path) the rules are tried once, against the whole
 * key: the first match decides, no match keeps the key. The text is the key as it is, so a directory
 * key keeps its trailing '/', which a pattern's trailing '/' matches like any other character (as in
 * juicefs: "logs/" matches the key "x/logs/", "logs" does not, and `*` matches the empty name after
 * the last '/').
 *
 * Pattern syntax (rsync's): a trailing '/' matches directories only; a leading '/' anchors the
 * pattern at the root of the transfer, otherwise it matches the tail of the path at a component
 * boundary. A pattern containing `*`, `?` or `[` is a wildcard pattern: `*` matches within one
 * component, `?` one character but '/', `[...]` a set (ranges, `!`/`^` negation, `[:alpha:]` and the
 * other POSIX classes, ASCII only), `**` anything including '/', and a trailing `dir/***` matches the
 * directory itself as well as everything in it; `\` escapes the next character. In a pattern without
 * wildcards every character, `\` included, is literal. A pattern starting with `**` may also match
 * zero leading components ("**\/b" matches "b").
 */
import { UsageError } from '../errors.js';

/** One `--include` or `--exclude`, in the order given on the command line. */
export type Rule = { include: boolean; pattern: string };

export interface CompileOptions {
  /** juicefs's --match-full-path: one decision on the whole key instead of one per level. */
  matchFullPath?: boolean;
}

/** true = keep the key. */
export type KeyMatcher = (key: string) => boolean;

/**
 * How one compiled rule tests one level. The level is `key.slice(base, end)`; `start` is where its
 * last component begins and `segment` how many '/' precede that component (from `base`).
 */
const Kind = {
  /** Last component equals `literal`. */
  NameLiteral: 0,
  /** Any last component (`*`). */
  NameAny: 1,
  /** Last component starts with `literal` (`abc*`). */
  NamePrefix: 2,
  /** Last component ends with `literal` (`*.tmp`, `.*` is NamePrefix). */
  NameSuffix: 3,
  /** Last component matches the sticky `re`, which cannot cross '/'. */
  NameRegExp: 4,
  /** The level equals `literal`, from the root. */
  AnchoredLiteral: 5,
  /** The level ends with `literal`, at a component boundary. */
  TailLiteral: 6,
  /** The level has `slashes` slashes and the sticky `re` matches it from the root. */
  AnchoredRegExp: 7,
  /** The last `slashes` + 1 components match the sticky `re`. */
  TailRegExp: 8,
  /** `re` (with `**`, so it may cross '/') matches the level, cut out of the key. */
  SliceRegExp: 9,
  /** `X/***` where X has no `**`: `inner` (X) matches this directory level or one above it. */
  Subtree: 10,
} as const;
type Kind = (typeof Kind)[keyof typeof Kind];

interface CompiledRule {
  include: boolean;
  dirOnly: boolean;
  kind: Kind;
  literal: string;
  slashes: number;
  /** Only SliceRegExp: at a directory level the text gets its '/' so that `dir/***` matches `dir`. */
  wild3: boolean;
  re: RegExp | null;
  inner: CompiledRule | null;
  /** The pattern ends in `**`: what matches a text matches every longer text too. */
  tailGlobstar: boolean;
  /** The pattern ends in '/' and a single `*`: its last component is any name. */
  tailStar: boolean;
}

type Token =
  | { t: 'char'; ch: string }
  | { t: 'star' }
  | { t: 'globstar' }
  | { t: 'one' }
  | { t: 'set'; source: string };

/** Compile the rules once; the matcher it returns allocates nothing per key but level slices for `**` rules. */
export function compileRules(rules: readonly Rule[], options: CompileOptions = {}): KeyMatcher {
  const fullPath = options.matchFullPath === true;
  const compiled = rules.map((rule) => compileRule(rule, fullPath));
  if (compiled.length === 0) return () => true;
  // Start of each path segment of the key being matched, reused from key to key.
  let segStarts = new Int32Array(64);

  if (fullPath) {
    return (key: string): boolean => {
      const base = key.length > 0 && key.charCodeAt(0) === 47 ? 1 : 0;
      const start = Math.max(key.lastIndexOf('/') + 1, base);
      for (let r = 0; r < compiled.length; r++) {
        const rule = compiled[r]!;
        if (levelMatches(rule, key, base, start, key.length, 0, false, segStarts)) return rule.include;
      }
      return true;
    };
  }

  return (key: string): boolean => {
    const len = key.length;
    // A leading '/' is not a component (rsync strips it too).
    const base = len > 0 && key.charCodeAt(0) === 47 ? 1 : 0;
    let pos = base;
    let segment = 0;
    while (pos < len) {
      if (segment === segStarts.length) {
        const grown = new Int32Array(segStarts.length * 2);
        grown.set(segStarts);
        segStarts = grown;
      }
      segStarts[segment] = pos;
      let end = key.indexOf('/', pos);
      if (end === -1) end = len;
      if (end > pos) {
        const isDir = end < len;
        for (let r = 0; r < compiled.length; r++) {
          const rule = compiled[r]!;
          if (rule.dirOnly && !isDir) continue;
          if (levelMatches(rule, key, base, pos, end, segment, isDir, segStarts)) {
            if (!rule.include) return false;
            break;
          }
        }
      }
      pos = end + 1;
      segment++;
    }
    return true;
  };
}

/** Could any key strictly under directory key `dir` be kept? false only when that is certain. */
export type SubtreeTest = (dir: string) => boolean;

/**
 * For a lister that prunes: "can anything under directory key `dir` be kept by these rules?",
 * answered false only when certain (a lister then skips the sub-tree), true ("maybe") otherwise.
 *
 * Layered mode: false when the directory key itself is dropped (every key under it passes the same
 * levels, so rsync never enters it: `--exclude 'logs/'`, `--exclude 'logs/***'`), or when, at the
 * level of its entries, an exclude rule that matches every name comes before any include rule
 * (`--exclude 'logs/*'`, `--exclude 'logs/**'`, `--exclude '**\/logs/*'`): each entry, and so everything below it, is
 * dropped there. An include rule before that may match something deeper, so the answer is then
 * "maybe", as it is for any rule whose match depends on the name.
 *
 * Full-path mode: false when an exclude rule that matches every key under `dir` (one ending in
 * `**` that matches `dir` itself, or `*`) comes before every include rule.
 */
export function compileSubtreeTest(rules: readonly Rule[], options: CompileOptions = {}): SubtreeTest {
  const fullPath = options.matchFullPath === true;
  const compiled = rules.map((rule) => compileRule(rule, fullPath));
  if (!compiled.some((r) => !r.include)) return () => true;
  const keep = compileRules(rules, options);
  const segStarts = new Int32Array(64);

  if (fullPath) {
    return (dir: string): boolean => {
      const base = dir.length > 0 && dir.charCodeAt(0) === 47 ? 1 : 0;
      for (const rule of compiled) {
        if (rule.include) return true;
        if (rule.kind === Kind.NameAny) return false;
        if (rule.kind === Kind.SliceRegExp && rule.tailGlobstar && regExpMatches(rule, dir, base, dir.length, -1)) return false;
      }
      return true;
    };
  }

  return (dir: string): boolean => {
    if (!dir.endsWith('/')) return true;
    if (!keep(dir)) return false;
    const base = dir.length > 0 && dir.charCodeAt(0) === 47 ? 1 : 0;
    // The level of an entry of `dir`: the probe stands for any name, which the rules tested below
    // do not look at (their last component is `*`, or they look only at the levels above).
    const probe = dir + '\0';
    let segment = 0;
    for (let pos = base; pos < dir.length; pos = dir.indexOf('/', pos) + 1) {
      if (segment === segStarts.length) return true; // deeper than worth a look: maybe
      segStarts[segment++] = pos;
    }
    segStarts[segment] = dir.length;
    for (const rule of compiled) {
      if (rule.include) return true;
      if (rule.dirOnly) continue;
      switch (rule.kind) {
        case Kind.NameAny:
          return false;
        case Kind.Subtree:
          if (levelMatches(rule, probe, base, dir.length, probe.length, segment, false, segStarts)) return false;
          break;
        case Kind.TailRegExp:
        case Kind.AnchoredRegExp:
          if (rule.tailStar && levelMatches(rule, probe, base, dir.length, probe.length, segment, false, segStarts)) return false;
          break;
        case Kind.SliceRegExp:
          if (rule.tailGlobstar && regExpMatches(rule, dir, base, dir.length, -1)) return false;
          if (rule.tailStar && levelMatches(rule, probe, base, dir.length, probe.length, segment, false, segStarts)) return false;
          break;
      }
    }
    return true;
  };
}

function levelMatches(
  rule: CompiledRule,
  key: string,
  base: number,
  start: number,
  end: number,
  segment: number,
  isDir: boolean,
  segStarts: Int32Array,
): boolean {
  const lit = rule.literal;
  switch (rule.kind) {
    case Kind.NameLiteral:
      return end - start === lit.length && key.startsWith(lit, start);
    case Kind.NameAny:
      return true;
    case Kind.NamePrefix:
      return end - start >= lit.length && key.startsWith(lit, start);
    case Kind.NameSuffix:
      return end - start >= lit.length && key.startsWith(lit, end - lit.length);
    case Kind.NameRegExp:
      return regExpMatches(rule, key, start, end, start);
    case Kind.AnchoredLiteral:
      return end - base === lit.length && key.startsWith(lit, base);
    case Kind.TailLiteral: {
      const from = end - lit.length;
      return (
        from >= base && key.startsWith(lit, from) && (from === base || key.charCodeAt(from - 1) === 47)
      );
    }
    case Kind.AnchoredRegExp:
      return segment === rule.slashes && regExpMatches(rule, key, base, end, base);
    case Kind.TailRegExp: {
      if (segment < rule.slashes) return false;
      const from = segStarts[segment - rule.slashes]!;
      return regExpMatches(rule, key, from, end, from);
    }
    case Kind.SliceRegExp: {
      const limit = rule.wild3 && isDir ? end + 1 : end;
      return regExpMatches(rule, key, base, limit, -1);
    }
    case Kind.Subtree: {
      const inner = rule.inner!;
      if (inner.literal.length > 0) {
        const at = key.indexOf(inner.literal, base);
        if (at < 0 || at + inner.literal.length > end) return false;
      }
      for (let j = isDir ? segment : segment - 1; j >= 0; j--) {
        const from = segStarts[j]!;
        const to = j === segment ? end : segStarts[j + 1]! - 1;
        if (to > from && levelMatches(inner, key, base, from, to, j, true, segStarts)) return true;
      }
      return false;
    }
  }
}

/**
 * Runs a rule's RegExp on key[from, limit) — sticky at `sticky`, or on a slice when it is -1 —
 * after a cheap check that the literal every match contains lies in that range.
 */
function regExpMatches(rule: CompiledRule, key: string, from: number, limit: number, sticky: number): boolean {
  const lit = rule.literal;
  if (lit.length > 0) {
    const at = key.indexOf(lit, from);
    if (at < 0 || at + lit.length > limit) return false;
  }
  const re = rule.re!;
  if (sticky < 0) return re.test(key.slice(from, limit));
  re.lastIndex = sticky;
  return re.test(key);
}

/**
 * The cheapest Kind that decides one rule. In full-path mode the text is the whole key, a directory
 * key's trailing '/' included: a pattern's trailing '/' is an ordinary character there, and only the
 * name kinds (patterns without '/') look at a single component, the last one.
 */
function compileRule(rule: Rule, fullPath: boolean): CompiledRule {
  const option = rule.include ? '--include' : '--exclude';
  let pattern = rule.pattern;
  if (pattern === '') throw new UsageError(`${option} needs a pattern, got an empty string`);
  const dirOnly = !fullPath && pattern.length > 1 && pattern.endsWith('/');
  if (dirOnly) pattern = pattern.slice(0, -1);
  const anchored = pattern.startsWith('/');
  const body = anchored ? pattern.slice(1) : pattern;
  const out: CompiledRule = {
    include: rule.include,
    dirOnly,
    kind: Kind.NameLiteral,
    literal: '',
    slashes: 0,
    wild3: false,
    re: null,
    inner: null,
    tailGlobstar: false,
    tailStar: false,
  };

  if (!/[*?[]/.test(pattern)) {
    out.literal = body;
    out.slashes = countSlashes(body);
    out.kind = anchored ? Kind.AnchoredLiteral : out.slashes > 0 ? Kind.TailLiteral : Kind.NameLiteral;
    return out;
  }

  const tokens = tokenize(body, rule.pattern, option);
  const slashes = tokens.reduce((n, tok) => (tok.t === 'char' && tok.ch === '/' ? n + 1 : n), 0);
  out.slashes = slashes;
  const onlyChars = tokens.every((tok) => tok.t === 'char');
  const last = tokens[tokens.length - 1];
  const beforeLast = tokens[tokens.length - 2];
  out.tailGlobstar = last?.t === 'globstar';
  out.tailStar = last?.t === 'star' && beforeLast?.t === 'char' && beforeLast.ch === '/';

  const globstars = tokens.filter((tok) => tok.t === 'globstar').length;
  if (!fullPath && globstars === 1 && body.endsWith('/***') && !body.endsWith('\\/***') && body.length > 4) {
    // `X/***` is rsync's "this directory and everything in it": X matching this directory level or
    // one above it is the same test, without cutting the level out of the key.
    out.kind = Kind.Subtree;
    out.inner = compileRule({ include: rule.include, pattern: pattern.slice(0, -4) }, false);
    return out;
  }
  if (globstars > 0 || (fullPath && !onlyChars && (anchored || slashes > 0))) {
    out.kind = Kind.SliceRegExp;
    out.wild3 = !fullPath && body.endsWith('***');
    let source: string;
    let required = tokens;
    if (anchored) {
      source = `^${toRegExpSource(tokens)}$`;
    } else if (tokens[0]!.t === 'globstar') {
      // rsync tries "**"-prefixed patterns against "/" + path, so "**/b" also matches "b".
      const rest = tokens.slice(1);
      const first = rest[0];
      if (first?.t === 'char' && first.ch === '/') {
        required = rest.slice(1);
        source = `^(?:.*/)?${toRegExpSource(required)}$`;
      } else {
        source = `^.*${toRegExpSource(rest)}$`;
      }
    } else {
      source = `(?:^|/)${toRegExpSource(tokens)}$`;
    }
    out.literal = longestLiteral(required);
    out.re = new RegExp(source, 'su');
    return out;
  }

  if (onlyChars) {
    // Every wildcard was escaped: a literal after all.
    out.literal = tokens.map((tok) => (tok as { ch: string }).ch).join('');
    out.kind = anchored ? Kind.AnchoredLiteral : slashes > 0 ? Kind.TailLiteral : Kind.NameLiteral;
    return out;
  }

  if (!anchored && slashes === 0) {
    const stars = tokens.filter((tok) => tok.t === 'star').length;
    const literalOf = (from: number, to: number) =>
      tokens
        .slice(from, to)
        .map((tok) => (tok as { ch: string }).ch)
        .join('');
    const restIsChars = (from: number, to: number) => tokens.slice(from, to).every((tok) => tok.t === 'char');
    if (stars === 1 && tokens.length === 1) {
      out.kind = Kind.NameAny;
      return out;
    }
    if (stars === 1 && tokens[tokens.length - 1]!.t === 'star' && restIsChars(0, tokens.length - 1)) {
      out.kind = Kind.NamePrefix;
      out.literal = literalOf(0, tokens.length - 1);
      return out;
    }
    if (stars === 1 && tokens[0]!.t === 'star' && restIsChars(1, tokens.length)) {
      out.kind = Kind.NameSuffix;
      out.literal = literalOf(1, tokens.length);
      return out;
    }
    out.kind = Kind.NameRegExp;
  } else {
    out.kind = anchored ? Kind.AnchoredRegExp : Kind.TailRegExp;
  }
  // Sticky, and it must end where the component ends; without `**` it cannot run past that.
  out.literal = longestLiteral(tokens);
  out.re = new RegExp(`${toRegExpSource(tokens)}(?![^/])`, 'uy');
  return out;
}

/** The longest run of plain characters in the tokens: every match contains it. */
function longestLiteral(tokens: readonly Token[]): string {
  let best = '';
  let run = '';
  for (const tok of tokens) {
    if (tok.t === 'char') {
      run += tok.ch;
      if (run.length > best.length) best = run;
    } else {
      run = '';
    }
  }
  return best;
}

function countSlashes(s: string): number {
  let n = 0;
  for (let i = s.indexOf('/'); i !== -1; i = s.indexOf('/', i + 1)) n++;
  return n;
}

function toRegExpSource(tokens: readonly Token[]): string {
  let source = '';
  for (const tok of tokens) {
    switch (tok.t) {
      case 'char':
        source += /[\\^$.*+?()[\]{}|/]/.test(tok.ch) ? `\\${tok.ch}` : tok.ch;
        break;
      case 'star':
        source += '[^/]*';
        break;
      case 'globstar':
        source += '.*';
        break;
      case 'one':
        source += '[^/]';
        break;
      case 'set':
        source += tok.source;
        break;
    }
  }
  return source;
}

const POSIX_CLASSES: Readonly<Record<string, ReadonlyArray<readonly [number, number]>>> = {
  alnum: [[0x30, 0x39], [0x41, 0x5a], [0x61, 0x7a]],
  alpha: [[0x41, 0x5a], [0x61, 0x7a]],
  blank: [[0x09, 0x09], [0x20, 0x20]],
  cntrl: [[0x00, 0x1f], [0x7f, 0x7f]],
  digit: [[0x30, 0x39]],
  graph: [[0x21, 0x7e]],
  lower: [[0x61, 0x7a]],
  print: [[0x20, 0x7e]],
  punct: [[0x21, 0x2f], [0x3a, 0x40], [0x5b, 0x60], [0x7b, 0x7e]],
  space: [[0x09, 0x0d], [0x20, 0x20]],
  upper: [[0x41, 0x5a]],
  xdigit: [[0x30, 0x39], [0x41, 0x46], [0x61, 0x66]],
};

function tokenize(body: string, pattern: string, option: string): Token[] {
  const bad = (why: string) =>
    new UsageError(`invalid pattern ${JSON.stringify(pattern)} for ${option}: ${why}`);
  const tokens: Token[] = [];
  let i = 0;
  while (i < body.length) {
    const c = body[i]!;
    if (c === '*') {
      let j = i + 1;
      while (body[j] === '*') j++;
      tokens.push(j - i > 1 ? { t: 'globstar' } : { t: 'star' });
      i = j;
    } else if (c === '?') {
      tokens.push({ t: 'one' });
      i++;
    } else if (c === '[') {
      const set = parseSet(body, i + 1, bad);
      tokens.push({ t: 'set', source: set.source });
      i = set.next;
    } else {
      let at = i;
      if (c === '\\') {
        at = i + 1;
        if (at >= body.length) throw bad('it ends with a lone "\\"; write "\\\\" for a backslash');
      }
      const ch = String.fromCodePoint(body.codePointAt(at)!);
      tokens.push({ t: 'char', ch });
      i = at + ch.length;
    }
  }
  return tokens;
}

/** A `[...]` set starting after its '['; returns its RegExp source, which never matches '/'. */
function parseSet(
  body: string,
  from: number,
  bad: (why: string) => UsageError,
): { source: string; next: number } {
  const unclosed = () => bad('"[" is not closed by "]"; write "\\[" for a literal bracket');
  let i = from;
  let negated = false;
  if (body[i] === '!' || body[i] === '^') {
    negated = true;
    i++;
  }
  const ranges: Array<readonly [number, number]> = [];
  const readChar = (): number => {
    if (i >= body.length) throw unclosed();
    if (body[i] === '\\') {
      i++;
      if (i >= body.length) throw unclosed();
    }
    const cp = body.codePointAt(i)!;
    i += cp > 0xffff ? 2 : 1;
    return cp;
  };
  let first = true;
  for (;;) {
    if (i >= body.length) throw unclosed();
    if (body[i] === ']' && !first) {
      i++;
      break;
    }
    first = false;
    if (body[i] === '[' && body[i + 1] === ':') {
      const close = body.indexOf(']', i + 2);
      if (close === -1) throw unclosed();
      if (close - 1 >= i + 2 && body[close - 1] === ':') {
        const name = body.slice(i + 2, close - 1);
        const cls = POSIX_CLASSES[name];
        if (!cls) throw bad(`unknown character class "[:${name}:]"`);
        ranges.push(...cls);
        i = close + 1;
        continue;
      }
      // No ":]" before the "]": the '[' is an ordinary member.
    }
    const lo = readChar();
    if (body[i] === '-' && i + 1 < body.length && body[i + 1] !== ']') {
      i++;
      const hi = readChar();
      // A reversed range matches nothing, as in rsync and Go.
      if (lo <= hi) ranges.push([lo, hi]);
    } else {
      ranges.push([lo, lo]);
    }
  }
  const hex = (cp: number) => `\\u{${cp.toString(16)}}`;
  const members = ranges.map(([lo, hi]) => (lo === hi ? hex(lo) : `${hex(lo)}-${hex(hi)}`)).join('');
  if (negated) return { source: `[^${members}\\/]`, next: i };
  const source = `[${members}]`;
  const coversSlash = ranges.some(([lo, hi]) => lo <= 0x2f && 0x2f <= hi);
  return { source: coversSlash ? `(?!\\/)${source}` : source, next: i };
}
