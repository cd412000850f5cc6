import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { UsageError } from '../shared/errors.js';
import type { SyncStats } from './sync/stats.js';

/**
 * `--metrics ADDR`: the run's counters in Prometheus's text format (version 0.0.4) at /metrics.
 * Names follow Prometheus's conventions: a `ferry_` prefix, units in the name, `_total` on
 * counters. Throughput is `rate(ferry_executor_transferred_bytes_total[1m])`; the gauge
 * `ferry_executor_throughput_bytes_per_second` gives the last few seconds' for dashboards without
 * PromQL.
 */
export class MetricsServer {
  readonly #samples = new Map<string, { at: number; bytes: number }[]>();
  readonly #timer: NodeJS.Timeout;

  private constructor(
    readonly server: Server,
    readonly stats: SyncStats,
  ) {
    this.#timer = setInterval(() => this.#sample(), 1000);
    this.#timer.unref();
    this.#sample();
  }

  /** Listen on HOST:PORT (`:PORT` is 127.0.0.1; port 0 picks a free one). */
  static async listen(addr: string, stats: SyncStats): Promise<MetricsServer> {
    const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(addr);
    if (!m || Number(m[3]) > 65535) throw new UsageError(`--metrics wants HOST:PORT (e.g. 127.0.0.1:9567 or :9567), not ${JSON.stringify(addr)}`);
    const host = m[1] ?? (m[2] || '127.0.0.1');
    let metrics: MetricsServer | undefined;
    const server = createServer((req, res) => {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      const path = (req.url ?? '/').split('?')[0];
      if (path !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('ferry serves /metrics\n');
        return;
      }
      const body = metrics!.render();
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', 'content-length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new UsageError(`--metrics ${addr}: cannot listen (${(err as Error).message})`)));
      server.listen(Number(m[3]), host, resolve);
    });
    metrics = new MetricsServer(server, stats);
    return metrics;
  }

  get url(): string {
    const a = this.server.address() as AddressInfo;
    return `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/metrics`;
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  /** Per-executor bytes over the last five seconds, for the throughput gauge. */
  #sample(): void {
    const now = performance.now();
    for (const e of this.stats.executors.values()) {
      let s = this.#samples.get(e.id);
      if (!s) this.#samples.set(e.id, (s = []));
      s.push({ at: now, bytes: e.transferredBytes });
      while (s.length > 6) s.shift();
    }
  }

  #throughput(id: string): number {
    const s = this.#samples.get(id);
    if (!s || s.length < 2) return 0;
    const a = s[0]!;
    const b = s[s.length - 1]!;
    return b.at > a.at ? ((b.bytes - a.bytes) * 1000) / (b.at - a.at) : 0;
  }

  render(): string {
    const st = this.stats;
    const out: string[] = [];
    const metric = (name: string, type: 'counter' | 'gauge', help: string, rows: [Record<string, string>, number][]): void => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, value] of rows) out.push(`${name}${labelText(labels)} ${formatValue(value)}`);
    };
    const one = (name: string, type: 'counter' | 'gauge', help: string, value: number) => metric(name, type, help, [[{}, value]]);
    one('ferry_found_objects_total', 'counter', 'Source keys that passed the filters and went out as work.', st.found);
    one('ferry_scanned_objects_total', 'counter', 'Source keys listed, excluded ones included.', st.scanned);
    one('ferry_excluded_objects_total', 'counter', 'Source keys excluded by the filters.', st.excluded);
    one('ferry_excluded_bytes_total', 'counter', 'Bytes of the excluded source keys.', st.excludedBytes);
    one('ferry_skipped_objects_total', 'counter', 'Keys equal on both sides, or skipped by a decision option.', st.skipped);
    one('ferry_skipped_bytes_total', 'counter', 'Bytes of the skipped keys.', st.skippedBytes);
    one('ferry_copied_objects_total', 'counter', 'Keys copied.', st.copied);
    one('ferry_copied_bytes_total', 'counter', 'Bytes of the keys copied.', st.copiedBytes);
    one('ferry_checked_objects_total', 'counter', 'Keys whose contents were compared.', st.checked);
    one('ferry_checked_bytes_total', 'counter', 'Bytes compared.', st.checkedBytes);
    one('ferry_extra_objects_total', 'counter', 'Destination keys not on the source, kept.', st.extra);
    one('ferry_deleted_objects_total', 'counter', 'Keys deleted (either side).', st.deleted);
    one('ferry_failed_objects_total', 'counter', 'Keys whose task failed.', st.failed);
    one('ferry_protected_objects_total', 'counter', 'Deletions withheld (incomplete listing, --max-deletes).', st.protected);
    one('ferry_transferred_bytes_total', 'counter', 'Bytes moved by all executors, also of copies still running.', st.transferredBytes);
    one('ferry_pending_objects', 'gauge', 'Keys found or planned for deletion and not handled yet.', st.pending);
    one('ferry_executors', 'gauge', 'Executors connected and taking work (the manager included when it executes).', st.liveExecutors);
    one('ferry_elapsed_seconds', 'gauge', 'Seconds since the run started.', st.elapsedSeconds);
    const ex = [...st.executors.values()];
    const l = (e: (typeof ex)[number]) => ({ executor: e.id, host: e.host });
    metric('ferry_executor_up', 'gauge', 'Whether the executor is connected (1) or gone (0).', ex.map((e) => [l(e), e.live ? 1 : 0]));
    metric('ferry_executor_tasks_total', 'counter', 'Tasks whose results the executor delivered and that counted.', ex.map((e) => [l(e), e.tasks]));
    metric('ferry_executor_copied_objects_total', 'counter', 'Keys the executor copied.', ex.map((e) => [l(e), e.copiedObjects]));
    metric('ferry_executor_copied_bytes_total', 'counter', 'Bytes of the keys, and of the parts of split objects, the executor copied.', ex.map((e) => [l(e), e.copiedBytes]));
    metric('ferry_executor_parts_total', 'counter', 'Parts of split objects (--split-size) the executor uploaded.', ex.map((e) => [l(e), e.parts]));
    metric('ferry_executor_transferred_bytes_total', 'counter', 'Bytes the executor moved, also of copies still running.', ex.map((e) => [l(e), e.transferredBytes]));
    metric('ferry_executor_throughput_bytes_per_second', 'gauge', "The executor's rate over the last five seconds.", ex.map((e) => [l(e), this.#throughput(e.id)]));
    metric('ferry_executor_lease_losses_total', 'counter', 'Times the executor lost the tasks it held (it left, went silent, or overstayed a lease).', ex.map((e) => [l(e), e.leasesLost]));
    return out.join('\n') + '\n';
  }
}

function labelText(labels: Record<string, string>): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return parts.length > 0 ? `{${parts.join(',')}}` : '';
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (!Number.isFinite(v)) return v > 0 ? '+Inf' : '-Inf';
  return Number.isInteger(v) ? String(v) : v.toFixed(3);
}
