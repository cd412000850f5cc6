/**
 * The JSON dump, format `ferry-dump/1` (docs/dump-format.md): one document, written as a stream in
 * a line form that load reads back line by line, in memory bounded by the tree's depth, without a
 * general streaming JSON parser:
 *
 *   {"format":"ferry-dump/1","created":"…","setting":{…},          ← the header line
 *   "tree":{"type":"dir",…,"entries":[                               ← the root directory opens
 *   {"name":"a.txt","type":"file","size":3,"mtime":…},               ← one entry a line
 *   {"name":"d","type":"dir",…,"entries":[                           ← a directory opens
 *   ]},                                                              ← and closes
 *   ]},
 *   "counters":{"files":1,"dirs":1,"symlinks":0,"bytes":3}}          ← known only at the end
 *
 * The whole is valid JSON (jq reads it). A document reformatted out of the line form is read by a
 * whole-document parse, but only below WHOLE_MAX.
 */
import { StringDecoder } from 'node:string_decoder';
import { decodeKey, encodeKey, hasRawBytes } from '../../shared/storage/keys.js';
import type { Readable, Writable } from 'node:stream';
import { InvalidDumpError } from '../../shared/errors.js';
import { emptyCounters, type DumpCounters, type DumpEntry } from './entry.js';

export const DUMP_FORMAT = 'ferry-dump/1';

/** A document not in the line form is parsed whole only up to this size (decompressed). */
export const WHOLE_MAX = 64 << 20;
/** A line longer than this is refused: no entry comes near it (names and targets are short). */
const LINE_MAX = 1 << 20;
/** The writer hands its text to the stream in pieces of about this size. */
const CHUNK = 256 << 10;
/** Entries per batch the reader yields. */
const BATCH = 2048;

export interface DumpHeader {
  format: string;
  /** ISO 8601, UTC. */
  created: string;
  /** Where the dump came from and how it was made; every secret reads "removed". */
  setting: Record<string, unknown>;
}

/** The root directory's own attributes (the entry with path ''). */
export type RootAttrs = Pick<DumpEntry, 'mtime' | 'mode' | 'uid' | 'gid'>;

// ---------------------------------------------------------------------------------------------
// Names that are not valid UTF-8

/**
 * `"key":"text"`, or `"keyBytes":"base64"` for a name holding raw bytes (lone U+DC80–U+DCFF), so
 * that the document is valid UTF-8 and other tools see the name's real bytes. A string that would
 * not come back from its bytes (a lone surrogate that is no escaped byte) stays a JSON string, which
 * JSON.stringify escapes as \uXXXX: it round-trips either way.
 */
function textField(key: string, s: string): string {
  if (hasRawBytes(s)) {
    try {
      return `"${key}Bytes":"${encodeKey(s).toString('base64')}"`;
    } catch {
      // Names no bytes: written as a string (see above).
    }
  }
  return `"${key}":${JSON.stringify(s)}`;
}

// ---------------------------------------------------------------------------------------------
// Writer

/** The attributes of an entry as JSON members, after its name (`,"type":…`). */
function attrsJson(e: DumpEntry | RootAttrs & { type?: undefined }): string {
  let s = '';
  if ('type' in e && e.type !== undefined) {
    s += ',"type":"' + e.type + '"';
    if (e.type === 'file') s += ',"size":' + e.size;
  } else s += ',"type":"dir"';
  if (e.mtime !== undefined) s += ',"mtime":' + e.mtime;
  if (e.mode !== undefined) s += ',"mode":' + e.mode;
  if (e.uid !== undefined) s += ',"uid":' + e.uid;
  if (e.gid !== undefined) s += ',"gid":' + e.gid;
  if ('type' in e && e.type !== undefined) {
    const d = e as DumpEntry;
    if (d.target !== undefined) s += ',' + textField('target', d.target);
    if (d.linkTo !== undefined) s += ',' + textField('linkTo', d.linkTo);
    if (d.md5 !== undefined) s += ',"md5":"' + d.md5 + '"';
    if (d.sha256 !== undefined) s += ',"sha256":"' + d.sha256 + '"';
  }
  return s;
}

/** Setting values whose key names a secret: written as "removed", whatever the caller put there. */
const SECRET_KEY = /secret|password|passwd|token|credential|private|sessionkey|accesskey|apikey/i;

/** A copy of `setting` with every secret value replaced by "removed" (nested objects too). */
export function removeSecrets(setting: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(setting)) {
    if (v === undefined) continue;
    if (SECRET_KEY.test(k) && v !== null && v !== '') out[k] = 'removed';
    else if (v !== null && typeof v === 'object' && !Array.isArray(v)) out[k] = removeSecrets(v as Record<string, unknown>);
    else out[k] = v;
  }
  return out;
}

/**
 * Writes a dump in the line form. Entries come in depth-first order (a directory before what it
 * holds, as DumpEntry's contract says); `add` only appends to a buffer, `flush` hands it to the
 * stream and waits for it to drain, so a caller adds a batch, then flushes once.
 */
export class JsonDumpWriter {
  #text = '';
  /** The line last made: it gets its ',' only once the next line shows whether one is needed. */
  #last = '';
  /** What #last is: an entry (needs ',' before a sibling), an opening or a closing line. */
  #lastKind: 'open' | 'item' | 'close' = 'open';
  /** Paths of the directories open now; [0] is the root (''). */
  readonly #open: string[] = [];
  #rootWritten = false;
  #finished = false;

  constructor(
    readonly out: Writable,
    header: { created?: Date; setting: Record<string, unknown> },
  ) {
    const h = { format: DUMP_FORMAT, created: (header.created ?? new Date()).toISOString(), setting: removeSecrets(header.setting) };
    const json = JSON.stringify(h);
    // The header line: the document's first members, ending with the ',' before "tree".
    this.#text = json.slice(0, -1) + ',\n';
  }

  #root(attrs: RootAttrs): void {
    this.#rootWritten = true;
    this.#last = '"tree":{' + attrsJson(attrs).slice(1) + ',"entries":[';
    this.#lastKind = 'open';
    this.#open.push('');
  }

  #line(text: string, kind: 'open' | 'item' | 'close'): void {
    const comma = kind !== 'close' && this.#lastKind !== 'open';
    this.#text += this.#last + (comma ? ',\n' : '\n');
    this.#last = text;
    this.#lastKind = kind;
  }

  /** Close open directories until `parent` is the innermost; false when it is not open at all. */
  #closeTo(parent: string): boolean {
    const open = this.#open;
    while (open.length > 1 && open[open.length - 1] !== parent) {
      open.pop();
      this.#line(']}', 'close');
    }
    return open[open.length - 1] === parent;
  }

  /** Append one entry. The root itself (path '') may come first, to give its attributes. */
  add(e: DumpEntry): void {
    if (this.#finished) throw new Error('JsonDumpWriter: add after finish');
    if (e.path === '') {
      if (this.#rootWritten) throw new Error('JsonDumpWriter: the root was given twice, or after other entries');
      this.#root(e);
      return;
    }
    if (!this.#rootWritten) this.#root({});
    const slash = e.path.lastIndexOf('/');
    const parent = slash < 0 ? '' : e.path.slice(0, slash);
    if (!this.#closeTo(parent)) throw new Error(`JsonDumpWriter: ${JSON.stringify(e.path)} came before its directory (entries must come depth-first)`);
    const name = slash < 0 ? e.path : e.path.slice(slash + 1);
    const body = '{' + textField('name', name) + attrsJson(e);
    if (e.type === 'dir') {
      this.#line(body + ',"entries":[', 'open');
      this.#open.push(e.path);
    } else this.#line(body + '}', 'item');
  }

  /** Text buffered, not yet handed to the stream. */
  get buffered(): number {
    return this.#text.length;
  }

  /** Hand what is buffered to the stream (all but the last line); resolves when the stream can take more. */
  async flush(): Promise<void> {
    if (this.#text.length === 0) return;
    const text = this.#text;
    this.#text = '';
    let ok = true;
    for (let i = 0; i < text.length; i += CHUNK) ok = this.out.write(text.length <= CHUNK ? text : text.slice(i, i + CHUNK));
    if (!ok && !this.out.destroyed) await drained(this.out);
  }

  /** Close every directory, write the counters, and end the stream (resolves once it has finished). */
  async finish(counters: DumpCounters): Promise<void> {
    if (!this.#rootWritten) this.#root({});
    while (this.#open.length > 0) {
      this.#open.pop();
      this.#line(']}', 'close');
    }
    this.#finished = true;
    const c = { files: counters.files, dirs: counters.dirs, symlinks: counters.symlinks, bytes: counters.bytes };
    this.#text += this.#last + ',\n"counters":' + JSON.stringify(c) + '}\n';
    this.#last = '';
    await this.flush();
    await new Promise<void>((resolve, reject) => {
      if (this.out.writableFinished) return resolve();
      const done = (err?: Error | null) => {
        this.out.off('finish', onFinish);
        this.out.off('error', done);
        if (err) reject(err);
        else resolve();
      };
      const onFinish = () => done();
      this.out.once('finish', onFinish);
      this.out.once('error', done);
      this.out.end();
    });
  }
}

function drained(out: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      out.off('drain', onDrain);
      out.off('error', done);
      out.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () => done(new Error('the output closed before the dump was written'));
    out.on('drain', onDrain);
    out.on('error', done);
    out.on('close', onClose);
  });
}

// ---------------------------------------------------------------------------------------------
// Reader

const ENTRIES_OPEN = ',"entries":[';
const COUNTERS = '"counters":';
const TREE = '"tree":';
const TYPES = new Set(['file', 'dir', 'symlink']);
const HEX32 = /^[0-9a-f]{32}$/;
const HEX64 = /^[0-9a-f]{64}$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Reads a JSON dump: `batches()` yields its entries (depth-first, every path from the root, the
 * root itself not among them), `header` is set before the first batch, `root` and `counters` once
 * the document has been read to its end. Everything wrong with the document (syntax, version, a
 * field of the wrong type, a truncated end, a gzip stream that breaks off) throws InvalidDumpError
 * naming the line.
 */
export class JsonDumpReader {
  header: DumpHeader | undefined;
  root: RootAttrs = {};
  counters: DumpCounters | undefined;
  /** The document was not in the line form and was read whole. */
  wasWhole = false;

  constructor(
    readonly input: Readable,
    readonly options: { name?: string; wholeMax?: number } = {},
  ) {}

  #where(line: number): string {
    return `${this.options.name ?? 'the dump'}, line ${line}`;
  }

  /** Where the line being read is, for messages: made into text only when something is wrong. */
  readonly #at: Where = { toString: () => this.#where(this.#line) };
  #line = 0;

  async *batches(): AsyncGenerator<DumpEntry[]> {
    const decoder = new StringDecoder('utf8');
    let rest = '';
    let lineNo = 0;
    let batch: DumpEntry[] = [];
    const stack: string[] = [];
    /** 0: header next, 1: tree next, 2: entries, 3: counters next, 4: done. */
    let state = 0;
    let whole: string[] | undefined;
    let wholeLen = 0;
    const wholeMax = this.options.wholeMax ?? WHOLE_MAX;
    // onLine switches to reading whole; a call hides that from the compiler's narrowing.
    const readingWhole = (): string[] | undefined => whole;

    const at = this.#at;
    /**
     * Lines of files and symlinks in a row (the bulk of a dump), parsed with one JSON.parse: a
     * call per line costs more than the parsing. A run that does not parse is parsed again line by
     * line, to name the line that is wrong.
     */
    let run: string[] = [];
    let runLine = 0;
    const flushRun = (): void => {
      if (run.length === 0) return;
      const lines = run;
      run = [];
      const parent = stack[stack.length - 1]!;
      let parsed: unknown[] | undefined;
      const lastLine = lines[lines.length - 1]!;
      if (lastLine.endsWith(',')) lines[lines.length - 1] = lastLine.slice(0, -1);
      try {
        parsed = JSON.parse('[' + lines.join('') + ']') as unknown[];
        if (parsed.length !== lines.length) parsed = undefined;
      } catch {
        parsed = undefined;
      }
      for (let i = 0; i < lines.length; i++) {
        this.#line = runLine + i;
        const line = lines[i]!;
        const o = parsed ? parsed[i] : parseLine(line.endsWith(',') ? line.slice(0, -1) : line, at);
        const e = toEntry(o, parent, at);
        if (e.type === 'dir') throw new InvalidDumpError(`${at}: a directory line must open its "entries"`);
        batch.push(e);
      }
    };
    const onLine = (line: string): void => {
      lineNo++;
      if (state === 2) {
        // The common case first: a file or symlink of the open directory, parsed with its run.
        const last = line.charCodeAt(line.length - 1);
        const closing = line === ']}' || line === ']},';
        if (!closing && (last === 0x7d || (last === 0x2c && line.charCodeAt(line.length - 2) === 0x7d))) {
          if (run.length === 0) runLine = lineNo;
          run.push(line);
          return;
        }
        flushRun();
        this.#line = lineNo;
        if (closing) {
          stack.pop();
          if (stack.length === 0) state = 3;
          return;
        }
        let text = line.endsWith(',') ? line.slice(0, -1) : line;
        const opens = text.endsWith(ENTRIES_OPEN);
        if (opens) text = text.slice(0, -ENTRIES_OPEN.length) + '}';
        const parent = stack[stack.length - 1]!;
        const e = toEntry(parseLine(text, at), parent, at);
        if (opens !== (e.type === 'dir')) throw new InvalidDumpError(`${at}: ${opens ? 'only a directory has entries' : 'a directory line must open its "entries"'}`);
        if (opens) stack.push(e.path);
        batch.push(e);
        return;
      }
      if (state === 0) {
        if (!line.startsWith('{"format":') || !line.endsWith(',')) {
          // Not the line form: read the document whole, if it is small enough.
          whole = [line + '\n'];
          wholeLen = line.length + 1;
          return;
        }
        this.header = toHeader(parseLine(line.slice(0, -1) + '}', this.#where(lineNo)), this.#where(lineNo));
        state = 1;
        return;
      }
      if (state === 1) {
        if (!line.startsWith(TREE) || !line.endsWith(ENTRIES_OPEN)) throw new InvalidDumpError(`${this.#where(lineNo)}: expected the tree's opening line ("tree":{…,"entries":[)`);
        const root = parseLine(line.slice(TREE.length, -ENTRIES_OPEN.length) + '}', this.#where(lineNo));
        this.root = toRoot(root, this.#where(lineNo));
        stack.push('');
        state = 2;
        return;
      }
      if (state === 3) {
        if (!line.startsWith(COUNTERS) || !line.endsWith('}')) throw new InvalidDumpError(`${this.#where(lineNo)}: expected the counters after the tree ("counters":{…}})`);
        this.counters = toCounters(parseLine(line.slice(COUNTERS.length, -1), this.#where(lineNo)), this.#where(lineNo));
        state = 4;
        return;
      }
      if (line.trim() !== '') throw new InvalidDumpError(`${this.#where(lineNo)}: text after the end of the dump`);
    };

    try {
      for await (const chunk of this.input as AsyncIterable<Buffer | string>) {
        const text = typeof chunk === 'string' ? chunk : decoder.write(chunk);
        if (whole) {
          wholeLen += text.length;
          if (wholeLen > wholeMax) throw tooBigWhole(this.options.name, wholeMax);
          whole.push(text);
          continue;
        }
        let start = 0;
        let nl = text.indexOf('\n');
        if (nl >= 0 && rest.length > 0) {
          onLine(rest + text.slice(0, nl));
          rest = '';
          start = nl + 1;
          nl = text.indexOf('\n', start);
        }
        while (nl >= 0 && !readingWhole()) {
          onLine(text.slice(start, nl));
          start = nl + 1;
          nl = text.indexOf('\n', start);
        }
        const w = readingWhole();
        if (w) {
          const more = text.slice(start);
          wholeLen += more.length;
          w.push(more);
          if (wholeLen > wholeMax) throw tooBigWhole(this.options.name, wholeMax);
          continue;
        }
        rest += text.slice(start);
        if (rest.length > LINE_MAX) {
          if (state === 0) {
            // A first line this long: a document on one line (jq -c), read whole if small enough.
            whole = [rest];
            wholeLen = rest.length;
            rest = '';
            continue;
          }
          throw new InvalidDumpError(`${this.#where(lineNo + 1)}: a line longer than ${LINE_MAX} bytes: not a ferry dump`);
        }
        flushRun();
        if (batch.length >= BATCH) {
          yield batch;
          batch = [];
        }
      }
      const tail = rest + decoder.end();
      if (whole) whole.push(tail);
      else if (tail !== '') onLine(tail);
      flushRun();
    } catch (err) {
      throw asInvalid(err, this.options.name);
    }
    if (whole) {
      this.wasWhole = true;
      yield* this.#whole(whole.join(''));
      return;
    }
    if (batch.length > 0) yield batch;
    if (state === 0 && lineNo === 0) throw new InvalidDumpError(`${this.options.name ?? 'the dump'} is empty`);
    if (state !== 4) throw new InvalidDumpError(`${this.options.name ?? 'the dump'} is truncated: it ends at line ${lineNo} ${state === 3 ? 'before its counters' : 'inside the tree'}`);
  }

  /** A document read whole (not in the line form): its tree walked depth-first. */
  async *#whole(text: string): AsyncGenerator<DumpEntry[]> {
    const where = `${this.options.name ?? 'the dump'} (read whole: it is not in ferry's line form)`;
    let doc: Record<string, unknown>;
    try {
      doc = JSON.parse(text) as Record<string, unknown>;
    } catch (err) {
      throw new InvalidDumpError(`${where}: not valid JSON (${(err as Error).message}); truncated?`);
    }
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new InvalidDumpError(`${where}: not a ferry dump (a JSON object with "format": "${DUMP_FORMAT}")`);
    this.header = toHeader({ format: doc['format'], created: doc['created'], setting: doc['setting'] }, where);
    const tree = doc['tree'] as Record<string, unknown> | undefined;
    if (typeof tree !== 'object' || tree === null || Array.isArray(tree)) throw new InvalidDumpError(`${where}: it has no "tree"`);
    if (doc['counters'] === undefined) throw new InvalidDumpError(`${where}: it has no "counters"; truncated?`);
    this.counters = toCounters(doc['counters'], where);
    this.root = toRoot(tree, where);
    // Depth-first, with an explicit stack: a deep tree must not overflow the call stack.
    const stack: { path: string; entries: unknown[]; i: number }[] = [{ path: '', entries: entriesOf(tree, where), i: 0 }];
    let batch: DumpEntry[] = [];
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      if (top.i >= top.entries.length) {
        stack.pop();
        continue;
      }
      const raw = top.entries[top.i++];
      const e = toEntry(raw, top.path, where);
      batch.push(e);
      if (e.type === 'dir') stack.push({ path: e.path, entries: entriesOf(raw as Record<string, unknown>, where), i: 0 });
      else if ((raw as Record<string, unknown>)['entries'] !== undefined) throw new InvalidDumpError(`${where}: ${JSON.stringify(e.path)}: only a directory has entries`);
      if (batch.length >= BATCH) {
        yield batch;
        batch = [];
      }
    }
    if (batch.length > 0) yield batch;
  }
}

function entriesOf(dir: Record<string, unknown>, where: string): unknown[] {
  const list = dir['entries'];
  if (list === undefined) return [];
  if (!Array.isArray(list)) throw new InvalidDumpError(`${where}: "entries" must be a list`);
  return list;
}

function tooBigWhole(name: string | undefined, max: number): InvalidDumpError {
  return new InvalidDumpError(
    `${name ?? 'the dump'} is not in ferry's line form (one entry a line, as ferry dump writes it; reformatted, e.g. by jq?) and is larger than ${max >> 20} MiB, ` +
      'the most that is read whole: load the dump as ferry wrote it',
  );
}

/** Errors of the input stream: a gzip stream that is corrupt or breaks off is an invalid dump. */
function asInvalid(err: unknown, name: string | undefined): unknown {
  if (err instanceof InvalidDumpError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  const message = (err as Error | null)?.message ?? String(err);
  if ((typeof code === 'string' && code.startsWith('Z_')) || /unexpected end of file|incorrect header check|invalid (stored|block|distance|code)/i.test(message)) {
    return new InvalidDumpError(`${name ?? 'the dump'} is not a valid gzip stream (corrupt or truncated): ${message}`, { cause: err });
  }
  return err;
}

/** A place in the dump for messages (a line, lazily made into text), or the text itself. */
type Where = string | { toString(): string };

function parseLine(text: string, where: Where): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new InvalidDumpError(`${where}: not valid JSON (${(err as Error).message})`);
  }
}

function toHeader(x: unknown, where: string): DumpHeader {
  const h = x as Partial<DumpHeader>;
  if (typeof h !== 'object' || h === null || typeof h.format !== 'string') throw new InvalidDumpError(`${where}: not a ferry dump (no "format")`);
  if (h.format !== DUMP_FORMAT) {
    const m = /^ferry-dump\/(\d+)$/.exec(h.format);
    if (m) throw new InvalidDumpError(`${where}: the dump is in format ${h.format}, which this version of ferry does not read (it reads ${DUMP_FORMAT}): load it with a newer ferry`);
    throw new InvalidDumpError(`${where}: not a ferry dump (format ${JSON.stringify(h.format)}, expected ${JSON.stringify(DUMP_FORMAT)})`);
  }
  if (typeof h.created !== 'string') throw new InvalidDumpError(`${where}: "created" must be a date`);
  if (typeof h.setting !== 'object' || h.setting === null || Array.isArray(h.setting)) throw new InvalidDumpError(`${where}: "setting" must be an object`);
  return { format: h.format, created: h.created, setting: h.setting };
}

function count(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

function toCounters(x: unknown, where: string): DumpCounters {
  const c = x as Partial<DumpCounters> | null;
  if (typeof c !== 'object' || c === null || !count(c.files) || !count(c.dirs) || !count(c.symlinks) || !count(c.bytes)) {
    throw new InvalidDumpError(`${where}: "counters" must hold files, dirs, symlinks and bytes as whole numbers`);
  }
  return { ...emptyCounters(), files: c.files, dirs: c.dirs, symlinks: c.symlinks, bytes: c.bytes };
}

function toRoot(x: unknown, where: string): RootAttrs {
  const o = x as Record<string, unknown>;
  if (typeof o !== 'object' || o === null) throw new InvalidDumpError(`${where}: the tree must be an object`);
  if (o['type'] !== undefined && o['type'] !== 'dir') throw new InvalidDumpError(`${where}: the tree's root must be a directory`);
  const e = {} as DumpEntry;
  attrsInto(e, o, where, undefined);
  return e;
}

/** Attributes shared by every entry (and the root), checked. */
function attrsInto(e: DumpEntry | RootAttrs, o: Record<string, unknown>, where: Where, path: string | undefined): void {
  const what = { toString: () => (path === undefined ? 'the root' : JSON.stringify(path)) };
  const m = o['mtime'];
  if (m !== undefined) {
    if (typeof m !== 'number' || !Number.isFinite(m) || Math.abs(m) > 8.64e15) throw new InvalidDumpError(`${where}: ${what}: "mtime" must be milliseconds since the epoch`);
    e.mtime = m;
  }
  const mode = o['mode'];
  if (mode !== undefined) {
    if (!count(mode) || mode > 0o7777) throw new InvalidDumpError(`${where}: ${what}: "mode" must be permission bits (0 to 4095)`);
    e.mode = mode;
  }
  for (const k of ['uid', 'gid'] as const) {
    const v = o[k];
    if (v === undefined) continue;
    if (!count(v) || v > 0xffffffff) throw new InvalidDumpError(`${where}: ${what}: "${k}" must be a whole number`);
    e[k] = v;
  }
}

/** A text member, or its `…Bytes` base64 form (raw bytes of a name that is not UTF-8). */
function textOf(o: Record<string, unknown>, key: string, where: Where): string | undefined {
  const s = o[key];
  const b = o[key + 'Bytes'];
  if (s !== undefined && b !== undefined) throw new InvalidDumpError(`${where}: both "${key}" and "${key}Bytes"`);
  if (s !== undefined) {
    if (typeof s !== 'string') throw new InvalidDumpError(`${where}: "${key}" must be a string`);
    return s;
  }
  if (b !== undefined) {
    if (typeof b !== 'string' || !BASE64.test(b) || b.length % 4 !== 0) throw new InvalidDumpError(`${where}: "${key}Bytes" must be base64`);
    return decodeKey(Buffer.from(b, 'base64'));
  }
  return undefined;
}

function toEntry(x: unknown, parent: string, where: Where): DumpEntry {
  const o = x as Record<string, unknown>;
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new InvalidDumpError(`${where}: an entry must be an object`);
  const name = textOf(o, 'name', where);
  if (name === undefined) throw new InvalidDumpError(`${where}: an entry has no "name"`);
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new InvalidDumpError(`${where}: the name ${JSON.stringify(name)} is not a file name (empty, '.', '..', or holding '/' or NUL)`);
  }
  const path = parent === '' ? name : parent + '/' + name;
  const type = o['type'];
  if (typeof type !== 'string' || !TYPES.has(type)) throw new InvalidDumpError(`${where}: ${JSON.stringify(path)}: "type" must be "file", "dir" or "symlink"`);
  const e: DumpEntry = { path, type: type as DumpEntry['type'], size: 0 };
  if (type === 'file') {
    const size = o['size'];
    if (!count(size)) throw new InvalidDumpError(`${where}: ${JSON.stringify(path)}: a file's "size" must be a whole number of bytes`);
    e.size = size;
  } else if (o['size'] !== undefined && o['size'] !== 0) throw new InvalidDumpError(`${where}: ${JSON.stringify(path)}: only files have a size`);
  attrsInto(e, o, where, path);
  const target = textOf(o, 'target', where);
  if (type === 'symlink') {
    if (target === undefined || target === '') throw new InvalidDumpError(`${where}: ${JSON.stringify(path)}: a symlink needs a "target"`);
    e.target = target;
  } else if (target !== undefined) throw new InvalidDumpError(`${where}: ${JSON.stringify(path)}: only symlinks have a target`);
  const linkTo = textOf(o, 'linkTo', where);
  if (linkTo !== undefined) {
    if (type !== 'file') throw new InvalidDumpError(`${where}: ${JSON.stringify(path)}: only files are hard links`);
    e.linkTo = linkTo;
  }
  const md5 = o['md5'];
  if (md5 !== undefined) {
    if (typeof md5 !== 'string' || !HEX32.test(md5)) throw new InvalidDumpError(`${where}: ${JSON.stringify(path)}: "md5" must be 32 lowercase hex digits`);
    e.md5 = md5;
  }
  const sha = o['sha256'];
  if (sha !== undefined) {
    if (typeof sha !== 'string' || !HEX64.test(sha)) throw new InvalidDumpError(`${where}: ${JSON.stringify(path)}: "sha256" must be 64 lowercase hex digits`);
    e.sha256 = sha;
  }
  return e;
}
