import { describe, expect, it } from 'vitest';
import { compileRules, compileSubtreeTest, type CompileOptions, type Rule } from '../../../src/shared/filter/rules.js';

const inc = (pattern: string): Rule => ({ include: true, pattern });
const exc = (pattern: string): Rule => ({ include: false, pattern });
const FULL: CompileOptions = { matchFullPath: true };

/** key → kept?, for every key of the table, so that a failure shows every wrong verdict at once. */
function expectTable(rules: Rule[], table: Record<string, boolean>, options?: CompileOptions): void {
  const keep = compileRules(rules, options);
  const got = Object.fromEntries(Object.keys(table).map((key) => [key, keep(key)]));
  expect(got).toEqual(table);
}

function usageErrorOf(rules: Rule[], options?: CompileOptions): { code?: unknown; message?: unknown } {
  try {
    compileRules(rules, options);
  } catch (err) {
    return err as { code?: unknown; message?: unknown };
  }
  throw new Error(`compileRules(${JSON.stringify(rules)}) did not throw`);
}

describe('compileRules: the examples of the juicefs sync document', () => {
  it("--exclude '.*' drops hidden files and everything under hidden directories", () => {
    expectTable([exc('.*')], {
      'a.txt': true,
      'a.b.c': true,
      'dir/file': true,
      'dir/': true,
      '.hidden': false,
      '.git/': false,
      '.git/config': false,
      '.git/objects/ab/cdef': false,
      'dir/.env': false,
      'dir/sub/.cache/x': false,
      'dir/sub/.cache/': false,
    });
  });

  it("--exclude '.*' --exclude 'pic/' --exclude '4.png'", () => {
    expectTable([exc('.*'), exc('pic/'), exc('4.png')], {
      'doc.txt': true,
      '.profile': false,
      'pic/': false,
      'pic/1.png': false,
      'pic/sub/2.png': false,
      'album/pic/1.png': false,
      // 'pic/' matches directories only.
      pic: true,
      'album/pic': true,
      '4.png': false,
      'album/4.png': false,
      '44.png': true,
      '4.png.bak': true,
      'picture/1.png': true,
    });
  });

  it("--include 'pic/' --include '4.png' --exclude '*' keeps pic/ and 4.png, as rsync does", () => {
    expectTable([inc('pic/'), inc('4.png'), exc('*')], {
      'pic/': true,
      '4.png': true,
      // The files in pic/ meet `*` at their own level (rsync; the document's wording is looser).
      'pic/1.png': false,
      'pic/sub/': false,
      // ... except those that an include names.
      'pic/4.png': true,
      'a.txt': false,
      'other/': false,
      'other/4.png': false,
      pic: false,
    });
  });

  it('rules given after --exclude "*" are never reached', () => {
    expectTable([exc('*'), inc('pic/'), inc('4.png')], {
      'pic/': false,
      'pic/1.png': false,
      '4.png': false,
      'a.txt': false,
    });
  });
});

describe('compileRules: layered mode, as rsync', () => {
  it("--include 'pic/***' --exclude '*' keeps the directory and everything in it", () => {
    expectTable([inc('pic/***'), exc('*')], {
      'pic/': true,
      'pic/1.png': true,
      'pic/sub/': true,
      'pic/sub/deep/2.jpg': true,
      // `dir/***` matches the directory, not a file of that name.
      pic: false,
      'pic2/1.png': false,
      'other.png': false,
      // The unanchored pattern matches at any depth, but `*` drops `x` first.
      'x/pic/1.png': false,
    });
  });

  it('no rules, or include rules only, keep everything', () => {
    expectTable([], { a: true, 'a/b/': true, '': true });
    expectTable([inc('*.go')], { 'a.txt': true, 'a/b.go': true, 'c/': true });
  });

  it('a key passes only when every level passes', () => {
    expectTable([exc('b')], {
      'a/b/c': false,
      'a/b': false,
      'a/b/': false,
      'a/bb/c': true,
      'b/a': false,
      'a/c': true,
    });
  });

  it('an include stops the search at its level only', () => {
    // 'a/' is included at the first level, then 'a/b' meets no rule ('a' is not its name): kept.
    expectTable([inc('a/'), exc('a')], { 'a/b': true, a: false, 'a/a': false, 'x/a/': true });
    expectTable([inc('a'), exc('b/'), inc('c')], { 'a/b/c': false, 'a/c': true });
    expectTable([inc('*.go'), exc('vendor')], { 'src/vendor/x/a.go': false, 'src/main.go': true });
  });

  it('a leading "/" of the key is not a component', () => {
    expectTable([exc('/a*')], { '/a1': false, '/b/a1': true });
    expectTable([exc('/a')], { '/a1': true });
  });

  it('keys deeper than the preallocated segment table', () => {
    const deep = Array.from({ length: 200 }, (_, i) => `d${i}`).join('/');
    expectTable([exc('d19[0-9]/d19?')], { [`${deep}/f`]: false, [deep]: false });
    expectTable([exc('/d0/d1/d2/d3')], { [`${deep}/f`]: false });
    expectTable([exc('d198/d199/f')], { [`${deep}/f`]: false, [`${deep}/g`]: true });
    expectTable([exc('d5/**/d199/f')], { [`${deep}/f`]: false, [`${deep}/g`]: true, [`x/${deep}/f`]: false });
  });

  it('a dropped directory key means its whole subtree is dropped (listers may prune there)', () => {
    const ruleSets: Rule[][] = [
      [inc('pic/'), inc('4.png'), exc('*')],
      [inc('pic/***'), exc('*')],
      [exc('.*'), exc('b/')],
      [inc('a/**/c/'), exc('c/'), inc('*.go'), exc('*/')],
      [exc('/a/b'), inc('**/d'), exc('d*')],
    ];
    const names = ['a', 'b', 'c', 'd', 'pic', '.h', '4.png', 'x.go'];
    const dirs: string[] = [''];
    for (const x of names) {
      dirs.push(`${x}/`);
      for (const y of names) dirs.push(`${x}/${y}/`);
    }
    for (const rules of ruleSets) {
      const keep = compileRules(rules);
      for (const dir of dirs) {
        if (dir === '' || keep(dir)) continue;
        for (const child of [...names, ...names.map((n) => `${n}/`), 'q/r/s']) {
          expect(keep(dir + child), `${JSON.stringify(rules)} ${dir}${child}`).toBe(false);
        }
      }
    }
  });
});

describe('compileRules: wildcards', () => {
  it('* matches within one component, even nothing', () => {
    expectTable([exc('*.txt')], {
      'a.txt': false,
      '.txt': false,
      'd/a.txt': false,
      'a.txt/b': false,
      'a.txt.gz': true,
      atxt: true,
    });
    expectTable([exc('a*b')], { ab: false, axyzb: false, 'a/b': true, 'a/xb': true, 'x/ab': false });
    expectTable([exc('a*/b')], { 'a/b': false, 'axx/b': false, 'a/x/b': true, 'z/a/b': false });
    expectTable([exc('a*b')], { ab: false, axyzb: false, 'a/b': true, 'a/xb': true, 'x/ab': false, 'a/b/': true }, FULL);
    expectTable([exc('a*/b')], { 'a/b': false, 'axx/b': false, 'a/x/b': true, 'z/a/b': false, 'a/b/c': true }, FULL);
  });

  it('? matches one character but "/"', () => {
    expectTable([exc('?.log')], { 'a.log': false, 'ab.log': true, '.log': true, 'x/a.log': false, 'é.log': false });
    expectTable([exc('a?c')], { abc: false, 'a/c': true, ac: true, 'a😀c': false });
    expectTable([exc('a?c')], { abc: false, 'a/c': true, 'x/abc': false, 'abc/d': true }, FULL);
  });

  it('[...] sets: ranges, negation, literal "]" and "-"', () => {
    expectTable([exc('file[0-9].txt')], { 'file1.txt': false, 'fileA.txt': true, 'file10.txt': true });
    expectTable([exc('[!a-c]*')], { apple: true, cherry: true, date: false, 'b/apple': true, 'b/date': false });
    expectTable([exc('[^a-c]*')], { apple: true, date: false });
    expectTable([exc('x[]]')], { 'x]': false, x: true });
    expectTable([exc('x[!]]')], { 'x]': true, xa: false });
    expectTable([exc('x[a-]')], { xa: false, 'x-': false, xb: true });
    expectTable([exc('x[-a]')], { xa: false, 'x-': false, xb: true });
    expectTable([exc('x[a-c-e]')], { xb: false, 'x-': false, xe: false, xd: true });
    expectTable([exc('x[\\]]')], { 'x]': false, 'x\\': true });
    expectTable([exc('x[éa]')], { 'xé': false, xe: true });
    // A reversed range matches nothing (rsync, Go).
    expectTable([exc('x[z-a]')], { xa: true, xz: true, xm: true });
    expectTable([exc('file[0-9].txt')], { 'file1.txt': false, 'd/file1.txt': false, 'file1.txt/': true }, FULL);
  });

  it('a set never matches "/"', () => {
    expectTable([exc('a[!x]b')], { 'a/b': true, acb: false });
    expectTable([exc('a[%-0]b')], { 'a/b': true, 'a%b': false, 'a0b': false });
    expectTable([exc('a[[:punct:]]b')], { 'a/b': true, 'a.b': false });
    expectTable([exc('a[!x]b')], { 'a/b': true, acb: false }, FULL);
  });

  it('[[:class:]] sets, ASCII only', () => {
    expectTable([exc('[[:digit:]]*')], { '1a': false, a1: true, '9': false, 'x/2b': false });
    expectTable([exc('[[:alpha:]]')], { a: false, Z: false, '1': true, ab: true, 'é': true });
    expectTable([exc('[[:upper:][:digit:]]x')], { Ax: false, '7x': false, ax: true });
    expectTable([exc('[^[:alnum:]]*')], { '_a': false, '-x': false, a_: true, '0': true });
    expectTable([exc('[[:space:]]*')], { ' a': false, '\ta': false, a: true });
    expectTable([exc('[[:xdigit:]][[:lower:]]')], { fa: false, Fa: false, ga: true, fA: true });
    expectTable([exc('[[:blank:]][[:cntrl:]]')], { ' \x01': false, '\t\x7f': false, '  ': true });
    expectTable([exc('[[:graph:]][[:print:]]')], { 'a ': false, ' a': true });
    // "[:" without a closing ":]" is an ordinary '[' member.
    expectTable([exc('x[[:a]')], { 'x[': false, 'x:': false, xa: false, xb: true });
    expectTable([exc('[[:digit:]]*')], { '1a': false, 'x/2b': false, '1a/b': true }, FULL);
  });

  it('** matches across "/"', () => {
    expectTable([exc('a/**/z')], {
      'a/b/z': false,
      'a/b/c/z': false,
      'a/z': true,
      'x/a/b/z': false,
      'a/b/z/more': false,
      'xa/b/z': true,
    });
    expectTable([exc('a**')], { ab: false, a: false, 'a/b': false, 'x/ab': false, ba: true });
    expectTable([exc('a**b')], { 'a/c/d/b/': false, 'b/c/d/b/': true, ab: false });
    expectTable([exc('a/**/z')], { 'a/b/z': false, 'a/b/c/z': false, 'a/z': true, 'x/a/b/z': false, 'a/b/z/more': true }, FULL);
    expectTable([exc('a**')], { ab: false, 'a/b': false, 'x/ab': false, ba: true }, FULL);
  });

  it('a leading ** also matches zero components', () => {
    expectTable([exc('**/cache')], { cache: false, 'a/cache': false, 'a/b/cache/x': false, mycache: true });
    expectTable([exc('**/d2/**a')], { 'd2/d3/1a': false, 'x/d2/d3/1a': false, 'd2/1a': false, 'd3/1a': true });
    expectTable([exc('**a')], { a: false, 'x/ba': false, ab: true });
    expectTable([exc('**/cache')], { cache: false, 'a/b/cache': false, 'a/cache/x': true, mycache: true }, FULL);
    expectTable([exc('**/d2/**a')], { 'd2/d3/1a': false }, FULL);
  });

  it('"/**/" anchored needs at least one component before', () => {
    expectTable([exc('/**/cache')], { cache: true, 'a/cache': false, 'a/b/cache/': false });
    expectTable([exc('/**/cache')], { cache: true, 'a/cache': false, 'a/b/cache/': true }, FULL);
  });

  it('dir/*** matches the directory and everything in it', () => {
    expectTable([exc('logs/***')], {
      'logs/': false,
      'logs/a': false,
      'logs/a/b/': false,
      logs: true,
      'x/logs/a': false,
      'logs2/a': true,
      'blogs/a': true,
    });
    expectTable([exc('/logs/***')], { 'logs/a': false, 'x/logs/a': true, 'logs/': false });
    expectTable([exc('*/logs/***')], { 'b/logs/': false, 'b/logs/c': false, 'logs/c': true, 'a/b/logs/c': false });
    expectTable([exc('/*/logs/***')], { 'b/logs/': false, 'b/logs/c': false, 'a/b/logs/c': true });
    expectTable([exc('l?gs/***')], { 'logs/a': false, 'x/lags/': false, 'lgs/a': true });
    expectTable([exc('/***')], { a: false, 'a/b': false, 'a/': false });
    expectTable([exc('***')], { a: false, 'a/b': false });
    expectTable([exc('logs/***')], { 'logs/': false, 'logs/a/b/': false, logs: true, 'x/logs/a': false }, FULL);
  });

  it('backslash escapes in wildcard patterns', () => {
    expectTable([exc('\\*.txt')], { '*.txt': false, 'a.txt': true });
    expectTable([exc('a\\?')], { 'a?': false, ab: true });
    expectTable([exc('\\[x\\]*')], { '[x]': false, '[x]y': false, x: true });
    expectTable([exc('a\\b*')], { abc: false, 'a\\bc': true });
    expectTable([exc('a\\*b*')], { 'a*bc': false, aXbc: true });
    expectTable([exc('\\*')], { '*': false, a: true }, FULL);
  });

  it('backslash is literal in patterns without wildcards', () => {
    expectTable([exc('a\\b')], { 'a\\b': false, ab: true });
    expectTable([exc('a\\]')], { 'a\\]': false, 'a]': true });
    expectTable([exc('a\\b')], { 'a\\b': false, ab: true }, FULL);
  });

  it('"." "+" "(" and other RegExp characters are literal', () => {
    expectTable([exc('a.(b)+{1}|$^*')], { 'a.(b)+{1}|$^': false, 'a.(b)+{1}|$^x': false, 'aX(b)+{1}|$^': true });
  });
});

describe('compileRules: anchored and floating patterns', () => {
  it('layered', () => {
    expectTable([exc('/a/b')], { 'a/b': false, 'x/a/b': true, 'a/b/c': false, 'xa/b': true, 'a/xb': true, a: true });
    expectTable([exc('a/b')], { 'a/b': false, 'x/a/b': false, 'a/b/c': false, 'xa/b': true, 'a/xb': true, a: true });
    expectTable([exc('/a*')], { ab: false, 'x/ab': true, 'ab/c': false });
    expectTable([exc('a*')], { ab: false, 'x/ab': false, 'ab/c': false });
    expectTable([exc('/a*/b?')], { 'ax/by': false, 'x/ax/by': true, 'ax/by/z': false, 'ax/b': true });
    expectTable([exc('a*/b?')], { 'ax/by': false, 'x/ax/by': false, 'ax/by/z': false, 'xa/by': true });
  });

  it('full path', () => {
    expectTable([exc('/a/b')], { 'a/b': false, 'x/a/b': true, 'a/b/c': true, 'xa/b': true }, FULL);
    expectTable([exc('a/b')], { 'a/b': false, 'x/a/b': false, 'a/b/c': true, 'xa/b': true }, FULL);
    expectTable([exc('/a*')], { ab: false, 'x/ab': true, 'ab/c': true }, FULL);
    expectTable([exc('a*')], { ab: false, 'x/ab': false, 'ab/c': true }, FULL);
    expectTable([exc('/a*/b?')], { 'ax/by': false, 'x/ax/by': true, 'ax/by/z': true }, FULL);
    expectTable([exc('a*/b?')], { 'ax/by': false, 'x/ax/by': false, 'xa/by': true }, FULL);
    expectTable([exc('a')], { 'b/a': false, 'a/b/c/d/': true, a: false }, FULL);
  });
});

describe('compileRules: directory-only patterns', () => {
  it('layered: a directory key, a file key, and the keys inside', () => {
    expectTable([exc('b/')], { 'a/b/': false, 'a/b': true, 'a/b/c': false, b: true, 'b/': false });
    expectTable([exc('a/b/')], { 'x/a/b/': false, 'x/a/b': true, 'a/b/c': false, 'a/b': true });
    expectTable([exc('/a/b/')], { 'a/b/': false, 'a/b': true, 'x/a/b/': true });
    expectTable([exc('a*/b?/')], { 'a1/': true, 'a1/b1/': false, 'a1/b1/c.txt': false, 'a1/b1': true });
    expectTable([exc('*/')], { 'top.txt': true, 'd/': false, 'd/f': false });
  });

  it('full path: the trailing "/" is part of the text', () => {
    expectTable([exc('b/')], { 'a/b/': false, 'a/b': true, 'a/b/c': true, 'b/': false }, FULL);
    expectTable([exc('a*/b?/')], { 'a1/b1/': false, 'a1/': true, 'a1/b1/c.txt': true }, FULL);
    // A pattern without the '/' does not match a directory key, and `*` matches its empty name.
    expectTable([exc('logs')], { 'logs/': true, logs: false, 'x/logs': false }, FULL);
    expectTable([exc('*')], { 'logs/': false, a: false }, FULL);
    expectTable([exc('a/*')], { 'a/': false, 'a/b/': true }, FULL);
  });
});

describe('compileRules: order decides', () => {
  it('layered', () => {
    expectTable([inc('*.go'), exc('*')], { 'main.go': true, 'a.txt': false });
    expectTable([exc('*'), inc('*.go')], { 'main.go': false, 'a.txt': false });
    expectTable([inc('keep/'), exc('*/')], { 'keep/x': true, 'drop/x': false });
    expectTable([exc('*/'), inc('keep/')], { 'keep/x': false, 'drop/x': false });
    expectTable([exc('a.go'), inc('*.go')], { 'a.go': false, 'b.go': true });
    expectTable([inc('*.go'), exc('a.go')], { 'a.go': true, 'b.go': true });
  });

  it('full path', () => {
    expectTable([inc('*.go'), exc('*')], { 'main.go': true, 'a.txt': false, 'd/main.go': true }, FULL);
    expectTable([exc('*'), inc('*.go')], { 'main.go': false, 'd/main.go': false }, FULL);
    expectTable([inc('**aa**'), exc('a')], { 'aa/a': true }, FULL);
    expectTable([exc('a'), inc('**aa**')], { 'aa/a': false }, FULL);
  });
});

describe('compileRules: invalid patterns', () => {
  it.each([
    ['[abc', 'not closed'],
    ['a[', 'not closed'],
    ['a[!', 'not closed'],
    ['[]', 'not closed'],
    ['x[a-', 'not closed'],
    ['x[\\', 'not closed'],
    ['[[:digit:]', 'not closed'],
    ['[[:foo:]]', 'unknown character class'],
    ['abc*\\', 'lone'],
  ])('%j throws FERRY_USAGE naming the pattern', (pattern, why) => {
    for (const options of [{}, FULL]) {
      for (const rule of [exc(pattern), inc(pattern)]) {
        const err = usageErrorOf([inc('ok'), rule], options);
        expect(err.code).toBe('FERRY_USAGE');
        expect(String(err.message)).toContain(JSON.stringify(pattern));
        expect(String(err.message)).toContain(rule.include ? '--include' : '--exclude');
        expect(String(err.message)).toContain(why);
      }
    }
  });

  it('an empty pattern throws FERRY_USAGE', () => {
    expect(usageErrorOf([exc('')]).code).toBe('FERRY_USAGE');
  });

  it('patterns that look odd but are valid', () => {
    for (const pattern of ['a]', '[]]', '[z-a]', '\\', 'a\\', '/', '//', '[[]', '[!]]', '[[:alpha:]-]']) {
      expect(() => compileRules([exc(pattern)]), pattern).not.toThrow();
      expect(() => compileRules([exc(pattern)], FULL), pattern).not.toThrow();
    }
    expectTable([exc('/')], { a: true, 'a/': true });
  });
});

/** dir → may anything under it be kept?, for every directory of the table. */
function expectSubtrees(rules: Rule[], table: Record<string, boolean>, options?: CompileOptions): void {
  const test = compileSubtreeTest(rules, options);
  const got = Object.fromEntries(Object.keys(table).map((dir) => [dir, test(dir)]));
  expect(got).toEqual(table);
}

/** Names below a directory, at several depths, of files and directories. */
const BELOW = ['f', 'a.txt', '4.png', '0x', 'keep/', 'keep/f', 'sub/deep/g.txt', 'logs/', 'logs/f', 'b/', 'b/c', 'cache/z', 'pic/', 'pic/4.png', '.x'];

describe('compileSubtreeTest: can anything under a directory be kept (listers skip the sub-tree when not)', () => {
  // The layered verdicts were checked against rsync 3.2 (`rsync -r --dry-run` with the same rules
  // over a tree holding BELOW in each directory): every "false" is a directory of which rsync
  // transfers nothing; every "true" one of which it transfers something, except where noted.
  it.each<[string, Rule[], Record<string, boolean>]>([
    ["--exclude 'logs/'", [exc('logs/')], { 'logs/': false, 'a/logs/': false, 'logs2/': true, 'a/': true }],
    ["--exclude 'logs/***'", [exc('logs/***')], { 'logs/': false, 'a/logs/': false, 'logs/sub/': false, 'xlogs/': true }],
    ["--exclude '/logs/***'", [exc('/logs/***')], { 'logs/': false, 'a/logs/': true }],
    ["--exclude 'logs/*'", [exc('logs/*')], { 'logs/': false, 'a/logs/': false, 'logs/sub/': false, 'logs2/': true }],
    ["--exclude 'logs/**'", [exc('logs/**')], { 'logs/': false, 'a/logs/': false }],
    ["--exclude '/logs/**'", [exc('/logs/**')], { 'logs/': false, 'a/logs/': true }],
    ["--exclude 'logs' (files and directories)", [exc('logs')], { 'logs/': false, 'a/logs/': false, 'a/': true }],
    ["--exclude '**/cache/**'", [exc('**/cache/**')], { 'cache/': false, 'x/cache/': false, 'x/': true }],
    ["--exclude '**/b/*'", [exc('**/b/*')], { 'a/b/': false, 'x/a/b/': false, 'a/': true }],
    ["--exclude '/a/b/*'", [exc('/a/b/*')], { 'a/b/': false, 'x/a/b/': true }],
    ["--exclude '*' and '*/'", [exc('*/')], { 'a/': false, 'x/a/b/': false }],
    ["--exclude '.*'", [exc('.*')], { '.git/': false, 'a/': true }],
    ['an include before the exclude keeps what it may match deeper', [inc('*.txt'), exc('logs/*')], { 'logs/': true, 'a/': true }],
    ['an include after it is never reached', [exc('logs/*'), inc('*.txt')], { 'logs/': false }],
    // logs/logs/ would be kept (it is named logs): "maybe".
    ["--include 'logs/' --exclude '*'", [inc('logs/'), exc('*')], { 'logs/': true, 'other/': false }],
    // rsync transfers nothing under pic/ here (no entry is named pic or 4.png), but one could be: "maybe".
    ["--include 'pic/' --include '4.png' --exclude '*'", [inc('pic/'), inc('4.png'), exc('*')], { 'pic/': true, 'other/': false }],
    ["--include '*/' --exclude '*' (directories only)", [inc('*/'), exc('*')], { 'a/': true }],
    ['patterns that match some names only', [exc('logs/[a-z]*'), exc('logs/x'), exc('*.tmp'), exc('logs/*/')], { 'logs/': true, 'x.tmp/': false }],
    ["--include 'logs/keep/' --exclude 'logs/*'", [inc('logs/keep/'), exc('logs/*')], { 'logs/': true }],
  ])('layered: %s', (_name, rules, table) => {
    expectSubtrees(rules, table);
  });

  it.each<[string, Rule[], Record<string, boolean>]>([
    // juicefs: 'logs/' matches the key "logs/" only, not the keys in it.
    ["--exclude 'logs/'", [exc('logs/')], { 'logs/': true }],
    ["--exclude 'logs/**'", [exc('logs/**')], { 'logs/': false, 'a/logs/': false, 'xlogs/': true }],
    ["--exclude '/logs/**'", [exc('/logs/**')], { 'logs/': false, 'a/logs/': true }],
    ["--exclude '*'", [exc('*')], { 'a/': false }],
    ['an include first', [inc('*.txt'), exc('**')], { 'a/': true }],
  ])('full path: %s', (_name, rules, table) => {
    expectSubtrees(rules, table, FULL);
  });

  it('no exclude rule: always maybe', () => {
    expectSubtrees([], { 'a/': true });
    expectSubtrees([inc('x')], { 'a/': true });
  });

  it('never says "nothing" of a directory under which the matcher keeps a key', () => {
    const ruleSets: Rule[][] = [
      [exc('logs/')], [exc('logs/***')], [exc('logs/*')], [exc('logs/**')], [exc('**/b/*')], [exc('*/*')], [exc('/*/*')],
      [inc('*.txt'), exc('logs/*')], [inc('keep/'), exc('logs/**')], [inc('pic/'), inc('4.png'), exc('*')], [inc('*/'), exc('*')],
      [exc('b'), inc('*.txt'), exc('*')], [exc('[a-k]*/*'), exc('*/[a-c]*')], [exc('**/keep/**'), inc('*.txt'), exc('*/*/*')],
    ];
    const dirs = ['logs/', 'a/logs/', 'a/', 'a/b/', 'x/a/b/', 'keep/', 'pic/', 'b/', 'z/', 'logs/keep/'];
    for (const options of [{}, FULL]) {
      for (const rules of ruleSets) {
        const keep = compileRules(rules, options);
        const test = compileSubtreeTest(rules, options);
        for (const dir of dirs) {
          if (test(dir)) continue;
          for (const below of BELOW) expect(keep(dir + below), `${JSON.stringify(rules)} ${JSON.stringify(options)}: ${dir}${below}`).toBe(false);
        }
      }
    }
  });
});

