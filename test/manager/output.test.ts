import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Console, escapeControls } from '../../src/manager/output.js';
import { formatBytes, SyncStats } from '../../src/manager/sync/stats.js';
import { Redactor } from '../../src/shared/redact.js';

/** A terminal of `columns` columns: what the console writes, as a string. */
function terminal(columns: number): { stream: NodeJS.WriteStream; text: () => string } {
  const s = new PassThrough();
  let text = '';
  s.on('data', (c) => (text += c));
  return { stream: Object.assign(s, { columns, isTTY: true }) as unknown as NodeJS.WriteStream, text: () => text };
}

describe('Console', () => {
  it('keeps the live progress line within the terminal width', async () => {
    // Bug: a ~100-character line wrapped on 80 columns, so every redraw scrolled the terminal.
    const t = terminal(80);
    const con = new Console(new Redactor(), 'normal', t.stream, true);
    const stats = new SyncStats();
    stats.scanned = 123456789;
    stats.copied = 98765432;
    stats.copiedBytes = 5 * 2 ** 40;
    con.startProgress(stats);
    await new Promise((r) => setTimeout(r, 450));
    con.stopProgress();
    const redraws = t.text().split('\r\x1b[K').filter((l) => l !== '');
    expect(redraws.length).toBeGreaterThan(0);
    for (const l of redraws) expect([...l].length).toBeLessThan(80);
  });

  it('shows control characters of keys escaped, never raw', () => {
    const t = terminal(80);
    const con = new Console(new Redactor(), 'verbose', t.stream, false);
    con.debug('copied evil\x1b]0;title\x07\r\nname\u202Etxt.exe');
    expect(t.text()).toBe('copied evil\\x1b]0;title\\x07\\r\\nname\\u202etxt.exe\n');
    expect(escapeControls('plain ü 日本')).toBe('plain ü 日本');
  });
});

describe('formatBytes', () => {
  it('rounds rates and sizes', () => {
    expect(formatBytes(1234.5678)).toBe('1.21 KiB');
    expect(formatBytes(999.4)).toBe('999 B');
    expect(formatBytes(5 * 2 ** 40)).toBe('5.00 TiB');
  });
});
