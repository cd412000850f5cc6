import type { SFTPWrapper } from 'ssh2';
import { AbortedError, TransientError } from '../errors.js';
import { connectResolved, describeTarget, resolveSshTarget, type ResolvedSshTarget, type SshConnection, type SshOptions, type SshTarget } from './connect.js';

/**
 * Whether an SFTP channel can still carry requests. ssh2 fails the requests in flight when a
 * channel closes, but a request sent after that is never answered: check before sending.
 */
export function channelOpen(sftp: SFTPWrapper): boolean {
  const s = sftp as unknown as { readable?: boolean; outgoing?: { state?: string } };
  return s.readable !== false && (s.outgoing?.state === undefined || s.outgoing.state === 'open');
}

interface Channel {
  sftp: SFTPWrapper;
  /** Operations using the channel now. */
  busy: number;
  dead: boolean;
}

/**
 * One SSH connection, opened on first use and again after it is lost, carrying up to
 * `maxChannels` SFTP channels. OpenSSH runs one single-threaded sftp-server per channel, so a few
 * channels let metadata calls and transfers proceed side by side; the connection's encryption is
 * shared. A store holds one pool and calls `withSftp()` per operation; close() ends it all.
 */
export class SftpPool {
  readonly #target: SshTarget;
  readonly #options: SshOptions;
  readonly #maxChannels: number;
  #resolved: Promise<ResolvedSshTarget> | undefined;
  #connection: Promise<SshConnection> | undefined;
  #channels: Channel[] = [];
  readonly #opening = new Set<Promise<Channel>>();
  #closed = false;

  constructor(target: SshTarget, options: SshOptions = {}, pool: { maxChannels?: number } = {}) {
    this.#target = target;
    this.#options = options;
    this.#maxChannels = Math.max(1, pool.maxChannels ?? 2);
  }

  /** The target after ~/.ssh/config (local files only; no connection). */
  resolved(): Promise<ResolvedSshTarget> {
    this.#resolved ??= resolveSshTarget(this.#target, this.#options);
    return this.#resolved;
  }

  async description(): Promise<string> {
    return describeTarget(await this.resolved());
  }

  /** The live connection, connecting when there is none. A failed attempt is not cached. */
  connection(signal?: AbortSignal): Promise<SshConnection> {
    if (this.#closed) return Promise.reject(new AbortedError('ssh connection pool is closed'));
    if (!this.#connection) {
      const p = this.resolved().then((r) => connectResolved(r, { ...this.#options, ...(signal ? { signal } : {}) }));
      this.#connection = p;
      p.then(
        (conn) => {
          conn.onClose(() => {
            if (this.#connection === p) this.#connection = undefined;
            for (const c of this.#channels) c.dead = true;
            this.#channels = [];
          });
          if (this.#closed) void conn.close();
        },
        () => {
          if (this.#connection === p) this.#connection = undefined;
        },
      );
    }
    return this.#connection;
  }

  async #acquire(signal?: AbortSignal): Promise<Channel> {
    for (;;) {
      signal?.throwIfAborted();
      const conn = await this.connection(signal);
      let best: Channel | undefined;
      for (const c of this.#channels) if (!c.dead && channelOpen(c.sftp) && (!best || c.busy < best.busy)) best = c;
      const canOpen = this.#channels.length + this.#opening.size < this.#maxChannels;
      if (best && (best.busy === 0 || !canOpen)) return this.#take(best);
      if (!canOpen) {
        // Every slot is being opened: wait for one.
        await Promise.race([...this.#opening].map((p) => p.catch(() => {})));
        continue;
      }
      const opening = this.#open(conn);
      this.#opening.add(opening);
      try {
        return this.#take(await opening);
      } catch (err) {
        if (best && !best.dead) return this.#take(best);
        throw err;
      } finally {
        this.#opening.delete(opening);
      }
    }
  }

  async #open(conn: SshConnection): Promise<Channel> {
    const sftp = await conn.sftp();
    const ch: Channel = { sftp, busy: 0, dead: false };
    const drop = (): void => {
      ch.dead = true;
      this.#channels = this.#channels.filter((c) => c !== ch);
    };
    sftp.on('end', drop);
    sftp.on('close', drop);
    sftp.on('error', drop);
    if (this.#closed) {
      sftp.end();
      throw new AbortedError('ssh connection pool is closed');
    }
    if (conn.closed) throw new TransientError(`sftp ${conn.description}: the connection closed`);
    this.#channels.push(ch);
    return ch;
  }

  #take(c: Channel): Channel {
    c.busy++;
    return c;
  }

  /** Run `fn` with an SFTP channel; handles it opens must be closed before it returns. */
  async withSftp<T>(fn: (sftp: SFTPWrapper) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const ch = await this.#acquire(signal);
    try {
      return await fn(ch.sftp);
    } finally {
      ch.busy--;
    }
  }

  /** Borrow a channel until release() is called (for streams that outlive one call). */
  async lease(signal?: AbortSignal): Promise<{ sftp: SFTPWrapper; release: () => void }> {
    const ch = await this.#acquire(signal);
    let released = false;
    return {
      sftp: ch.sftp,
      release: () => {
        if (released) return;
        released = true;
        ch.busy--;
      },
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    const p = this.#connection;
    this.#connection = undefined;
    this.#channels = [];
    if (!p) return;
    const conn = await p.catch(() => undefined);
    await conn?.close();
  }
}
