/**
 * A small HTTP reverse proxy on 127.0.0.1 in front of any HTTP test server. It logs every request
 * and, on demand, fails the next requests the way a real service does: 503 SlowDown, 500
 * InternalError (both with S3's XML error body), or a dropped connection. Point a store at the
 * proxy's port instead of the server's to make `inject` work.
 */
import { Agent, createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream';
import type { Fault } from '../shared/storage/conformance.js';

export interface LoggedRequest {
  method: string;
  /** Path as sent (still percent-encoded). */
  path: string;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  /** The status answered (by the proxy or the server); undefined for dropped connections. */
  status?: number;
  /** What the proxy did instead of forwarding. */
  injected?: Fault | 'canned';
}

/** A prepared answer, for responses the test server cannot produce (partial DeleteObjects errors). */
export interface CannedResponse {
  status: number;
  headers?: Record<string, string>;
  body?: string;
  /** Only requests this accepts get the answer; others pass through. */
  match?: (request: LoggedRequest) => boolean;
}

type Action = { kind: 'fault'; fault: Fault; remaining: number } | { kind: 'canned'; response: CannedResponse; remaining: number };

function s3ErrorXml(code: string, message: string): string {
  const id = Math.random().toString(16).slice(2, 18).toUpperCase();
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><RequestId>${id}</RequestId><HostId>fault-proxy</HostId></Error>`;
}

const FAULTS: Record<Exclude<Fault, 'drop'>, { status: number; code: string; message: string }> = {
  throttle: { status: 503, code: 'SlowDown', message: 'Please reduce your request rate.' },
  error: { status: 500, code: 'InternalError', message: 'We encountered an internal error. Please try again.' },
};

export class FaultProxy {
  readonly requests: LoggedRequest[] = [];
  readonly #server: Server;
  readonly #agent = new Agent({ keepAlive: true, maxSockets: 64 });
  readonly #actions: Action[] = [];

  private constructor(server: Server) {
    this.#server = server;
  }

  /** Start a proxy on 127.0.0.1 (a free port) forwarding to `target`. */
  static async start(target: { host?: string; port: number }): Promise<FaultProxy> {
    const server = createServer();
    const proxy = new FaultProxy(server);
    server.keepAliveTimeout = 60_000;
    server.on('request', (req, res) => {
      const url = new URL(req.url ?? '/', 'http://proxy');
      const entry: LoggedRequest = { method: req.method ?? 'GET', path: url.pathname, query: url.searchParams, headers: req.headers };
      proxy.requests.push(entry);
      const action = proxy.#take(entry);
      if (action?.kind === 'fault' && action.fault === 'drop') {
        entry.injected = 'drop';
        req.socket.destroy();
        return;
      }
      if (action) {
        let answer: CannedResponse;
        if (action.kind === 'canned') answer = action.response;
        else {
          const f = FAULTS[action.fault as Exclude<Fault, 'drop'>];
          answer = { status: f.status, body: s3ErrorXml(f.code, f.message) };
        }
        entry.injected = action.kind === 'canned' ? 'canned' : action.fault;
        entry.status = answer.status;
        // Read the whole request first, as a server does, so the client sees the answer and not a reset.
        req.resume();
        req.on('end', () => {
          const body = answer.body ?? '';
          res.writeHead(answer.status, { 'content-type': 'application/xml', 'content-length': String(Buffer.byteLength(body)), ...answer.headers });
          res.end(req.method === 'HEAD' ? undefined : body);
        });
        return;
      }
      const up = httpRequest(
        { host: target.host ?? '127.0.0.1', port: target.port, method: req.method, path: req.url, headers: req.headers, agent: proxy.#agent },
        (ures) => {
          if (ures.statusCode !== undefined) entry.status = ures.statusCode;
          res.writeHead(ures.statusCode ?? 502, ures.headers);
          pipeline(ures, res, () => {});
        },
      );
      up.on('error', () => res.destroy());
      pipeline(req, up, () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return proxy;
  }

  #take(entry: LoggedRequest): Action | undefined {
    const i = this.#actions.findIndex((a) => a.kind === 'fault' || !a.response.match || a.response.match(entry));
    if (i < 0) return undefined;
    const action = this.#actions[i]!;
    if (--action.remaining <= 0) this.#actions.splice(i, 1);
    return action;
  }

  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  /** `127.0.0.1:PORT`, for an address such as `minio://127.0.0.1:PORT/bucket`. */
  get endpoint(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Fail the next `count` requests: 503 SlowDown, 500 InternalError, or a dropped connection. */
  inject(fault: Fault, count = 1): void {
    this.#actions.push({ kind: 'fault', fault, remaining: count });
  }

  /** Answer the next `count` requests (that `response.match` accepts) with a prepared response. */
  respond(response: CannedResponse, count = 1): void {
    this.#actions.push({ kind: 'canned', response, remaining: count });
  }

  /** Forget the request log and any pending faults. */
  reset(): void {
    this.requests.length = 0;
    this.#actions.length = 0;
  }

  async close(): Promise<void> {
    this.#agent.destroy();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
