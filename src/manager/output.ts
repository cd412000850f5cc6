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
    const safe = this.redactor.redact(text);
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
  startProgress(stats: SyncStats, intervalMs = 5000): void {
    if (this.verbosity === 'quiet') return;
    let lastBytes = 0;
    let lastAt = performance.now();
    let rate = 0;
    const tick = () => {
      const now = performance.now();
      const dt = (now - lastAt) / 1000;
      if (dt > 0.5 || rate === 0) {
        rate = (stats.transferredBytes - lastBytes) / Math.max(dt, 0.001);
        lastBytes = stats.transferredBytes;
        lastAt = now;
      }
      const line =
        `Scanned: ${stats.scanned}, pending: ${stats.pending}, copied: ${stats.copied} (${formatBytes(stats.copiedBytes)}), ` +
        `skipped: ${stats.skipped}, deleted: ${stats.deleted}, failed: ${stats.failed}, ${formatBytes(rate)}/s, ${stats.elapsedSeconds.toFixed(0)}s`;
      if (this.tty) {
        this.#line = this.redactor.redact(line);
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
