import type { Redactor } from '../shared/redact.js';
import type { Logger } from './sync/run.js';
import { formatBytes, type SyncStats } from './sync/stats.js';

export type Verbosity = 'quiet' | 'normal' | 'verbose';

/**
 * Everything ferry says on standard error: log lines and the progress display, both passed through
 * the run's redactor. On a terminal the progress line is redrawn in place and log lines go above it.
 */
export class Console implements Logger {
  #line = '';
  #timer: NodeJS.Timeout | undefined;

  constructor(
    readonly redactor: Redactor,
    readonly verbosity: Verbosity,
    readonly stream: NodeJS.WriteStream = process.stderr,
    readonly tty: boolean = Boolean(process.stderr.isTTY),
  ) {}

  #write(text: string): void {
    const safe = escapeControls(this.redactor.redact(text));
    if (this.tty && this.#line) this.stream.write('\r\x1b[K' + safe + '\n' + this.#line);
    else this.stream.write(safe + '\n');
  }

  error(message: string): void {
    this.#write(`ferry: error: ${message}`);
  }
  warn(message: string): void {
    if (this.verbosity !== 'quiet') this.#write(`ferry: warning: ${message}`);
  }
  info(message: string): void {
    if (this.verbosity !== 'quiet') this.#write(message);
  }
  debug(message: string): void {
    if (this.verbosity === 'verbose') this.#write(message);
  }

  /** Live progress: redrawn every 200 ms on a terminal, a line every `intervalMs` otherwise. */
  startProgress(stats: SyncStats, intervalMs = 5000, cluster = false): void {
    if (this.verbosity === 'quiet') return;
    // The rate over a sliding window: workers report their bytes with their heartbeats (every
    // second or two), so a short window would swing between zero and twice the truth.
    const windowMs = cluster ? 5000 : 1000;
    const samples: { at: number; bytes: number }[] = [{ at: performance.now(), bytes: 0 }];
    let rate = 0;
    const tick = () => {
      const now = performance.now();
      samples.push({ at: now, bytes: stats.transferredBytes });
      while (samples.length > 2 && now - samples[1]!.at >= windowMs) samples.shift();
      const first = samples[0]!;
      rate = now > first.at ? ((stats.transferredBytes - first.bytes) * 1000) / (now - first.at) : 0;
      const line =
        `Scanned: ${stats.scanned}, pending: ${stats.pending}, copied: ${stats.copied} (${formatBytes(stats.copiedBytes)}), ` +
        `skipped: ${stats.skipped}, deleted: ${stats.deleted}, failed: ${stats.failed}, ${formatBytes(rate)}/s, ` +
        (cluster ? `executors: ${stats.liveExecutors}, ` : '') +
        `${stats.elapsedSeconds.toFixed(0)}s`;
      if (this.tty) {
        // Redrawn in place only while it fits: a line that wraps scrolls the terminal on every redraw.
        this.#line = fit(this.redactor.redact(line), (this.stream.columns || 80) - 1);
        this.stream.write('\r\x1b[K' + this.#line);
      } else this.stream.write(this.redactor.redact(line) + '\n');
    };
    this.#timer = setInterval(tick, this.tty ? 200 : intervalMs);
    this.#timer.unref();
  }

  stopProgress(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.tty && this.#line) this.stream.write('\r\x1b[K');
    this.#line = '';
  }
}

/**
 * Control characters (and the Unicode ones that reorder or hide text) shown as escapes: a key named
 * "\r\x1b[2K..." must not rewrite the user's terminal or hide what ferry says.
 */
export function escapeControls(text: string): string {
  return text.replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => {
    const n = c.charCodeAt(0);
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    return n < 0x100 ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
  });
}

/** The progress line cut to the terminal's width: the counts that matter most come first. */
function fit(line: string, width: number): string {
  if (line.length <= width) return line;
  return width > 1 ? line.slice(0, width - 1) + '…' : '';
}
