import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { createServer, Socket, type Server } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { connectSsh, type SshConnection } from '../../../src/shared/ssh/connect.js';
import { checkHostKey } from '../../../src/shared/ssh/known-hosts.js';
import { SftpPool } from '../../../src/shared/ssh/pool.js';
import { makeKey, SSH_KEYGEN, sshdMissing, startSshd, warnIfSshdMissing, writeClientFiles, type Sshd } from '../../support/sshd.js';

const run = promisify(execFile);
warnIfSshdMissing();

/** `type base64` of a public key line. */
function keyText(publicLine: string): string {
  return publicLine.split(' ').slice(0, 2).join(' ');
}

function blobOf(publicLine: string): Buffer {
  return Buffer.from(publicLine.split(' ')[1]!, 'base64');
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

describe.skipIf(sshdMissing !== undefined)('connectSsh against OpenSSH', () => {
  let s: Sshd;
  const open: SshConnection[] = [];
  beforeAll(async () => {
    // Two host keys: known_hosts decides which one the client asks for.
    s = await startSshd({ hostKeyTypes: ['ed25519', 'ecdsa'] });
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((c) => c.close()));
    vi.restoreAllMocks();
  });
  afterAll(async () => {
    await s?.cleanup();
  });

  const name = (): string => `[127.0.0.1]:${s.port}`;

  it('records an unknown host, then accepts it without recording it again', async () => {
    const client = await writeClientFiles(s);
    const c1 = await connectSsh({ host: '127.0.0.1', port: s.port, user: s.user }, client.sshOptions);
    open.push(c1);
    expect(c1.description).toBe(`${s.user}@127.0.0.1:${s.port}`);
    const first = await fsp.readFile(client.knownHostsPath, 'utf8');
    expect(first.trim().split('\n')).toHaveLength(1);
    expect(first).toMatch(new RegExp(`^\\[127\\.0\\.0\\.1\\]:${s.port} ssh-ed25519 `));
    expect((await checkHostKey([client.knownHostsPath], name(), blobOf(s.hostKey.publicLine))).status).toBe('known');

    const c2 = await connectSsh({ host: '127.0.0.1', port: s.port, user: s.user }, client.sshOptions);
    open.push(c2);
    expect(await fsp.readFile(client.knownHostsPath, 'utf8')).toBe(first);
  });

  it('asks for the host key type on record when the server has several', async () => {
    const ecdsa = s.hostKeys[1]!;
    const client = await writeClientFiles(s, { knownHosts: [`${name()} ${keyText(ecdsa.publicLine)}`] });
    open.push(await connectSsh({ host: '127.0.0.1', port: s.port, user: s.user }, client.sshOptions));
    // Had the client taken the server's preferred ed25519 key, it would have recorded it as new.
    expect((await fsp.readFile(client.knownHostsPath, 'utf8')).trim().split('\n')).toHaveLength(1);
  });

  it('refuses a changed host key, naming the host and where the old key is', async () => {
    const stranger = await makeKey(join(s.dir, `old-host-key-${Date.now()}`));
    const client = await writeClientFiles(s, { knownHosts: ['# first line', `${name()} ${keyText(stranger.publicLine)}`] });
    const err = await connectSsh({ host: '127.0.0.1', port: s.port, user: s.user }, client.sshOptions).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'FERRY_FATAL', name: 'FatalError' });
    const message = (err as Error).message;
    expect(message).toContain(name());
    expect(message).toContain(`${client.knownHostsPath}:2`);
    expect(message).toContain('ssh-keygen -R');
    // Nothing was added.
    expect((await fsp.readFile(client.knownHostsPath, 'utf8')).trim().split('\n')).toHaveLength(2);
  });

  it('matches hashed known_hosts entries (ssh-keygen -H), and refuses a hashed changed key', async () => {
    const good = await writeClientFiles(s, { knownHosts: [`${name()} ${keyText(s.hostKey.publicLine)}`] });
    await run(SSH_KEYGEN, ['-H', '-f', good.knownHostsPath]);
    const hashed = await fsp.readFile(good.knownHostsPath, 'utf8');
    expect(hashed.startsWith('|1|')).toBe(true);
    open.push(await connectSsh({ host: '127.0.0.1', port: s.port, user: s.user }, good.sshOptions));
    expect(await fsp.readFile(good.knownHostsPath, 'utf8')).toBe(hashed);

    const stranger = await makeKey(join(s.dir, `hashed-old-${Date.now()}`));
    const bad = await writeClientFiles(s, { knownHosts: [`${name()} ${keyText(stranger.publicLine)}`] });
    await run(SSH_KEYGEN, ['-H', '-f', bad.knownHostsPath]);
    await expect(connectSsh({ host: '127.0.0.1', port: s.port, user: s.user }, bad.sshOptions)).rejects.toMatchObject({ code: 'FERRY_FATAL' });
  });

  it('refuses an unknown host under StrictHostKeyChecking yes', async () => {
    const client = await writeClientFiles(s, { config: 'Host *\n  StrictHostKeyChecking yes\n' });
    const err = await connectSsh({ host: '127.0.0.1', port: s.port, user: s.user }, client.sshOptions).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'FERRY_FATAL' });
    expect((err as Error).message).toContain('StrictHostKeyChecking');
    await expect(fsp.readFile(client.knownHostsPath, 'utf8')).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('follows a Host alias: HostName, Port, User and IdentityFile', async () => {
    const keyDir = await fsp.mkdtemp(join(s.dir, 'alias-'));
    await fsp.copyFile(s.clientKey.path, join(keyDir, 'the key'));
    const config = `Host testbox\n  HostName 127.0.0.1\n  Port ${s.port}\n  User ${s.user}\n  IdentityFile "${keyDir}/the key"\n`;
    // The default identities are a key the server refuses: only the config's IdentityFile can work.
    const stranger = await makeKey(join(keyDir, 'stranger'));
    const client = await writeClientFiles(s, { config, identityFiles: [stranger.path] });
    const c = await connectSsh({ host: 'testbox' }, client.sshOptions);
    open.push(c);
    expect(c.target).toMatchObject({ alias: 'testbox', host: '127.0.0.1', port: s.port, user: s.user });
  });

  it('turns on TCP_NODELAY once the connection is ready', async () => {
    // Regression: without setNoDelay(true) every small SFTP write waits for Nagle (5 MiB took ~5 s instead of 0.06 s).
    const spy = vi.spyOn(Socket.prototype, 'setNoDelay');
    const client = await writeClientFiles(s);
    const c = await connectSsh({ host: '127.0.0.1', port: s.port, user: s.user }, client.sshOptions);
    open.push(c);
    const sock = (c.client as unknown as { _sock: Socket })._sock;
    const onSocket = spy.mock.calls.filter((_, i) => spy.mock.contexts[i] === sock);
    expect(onSocket).toContainEqual([true]);
  });

  it('says FERRY_PERMISSION_DENIED naming user@host:port when no key is accepted, without the password', async () => {
    const stranger = await makeKey(join(s.dir, `client-stranger-${Date.now()}`));
    const client = await writeClientFiles(s, { identityFiles: [stranger.path] });
    const err = await connectSsh({ host: '127.0.0.1', port: s.port, user: s.user }, { ...client.sshOptions, password: 'sekrit-pass' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'FERRY_PERMISSION_DENIED' });
    const message = (err as Error).message;
    expect(message).toContain(`${s.user}@127.0.0.1:${s.port}`);
    expect(message).toContain(stranger.path);
    expect(message).not.toContain('sekrit-pass');
  });

  it('says FERRY_TRANSIENT naming host and port when the connection is refused', async () => {
    const port = await freePort();
    const client = await writeClientFiles(s);
    const err = await connectSsh({ host: '127.0.0.1', port, user: s.user }, client.sshOptions).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'FERRY_TRANSIENT' });
    expect((err as Error).message).toContain(`127.0.0.1:${port}`);
    expect((err as Error).message).toContain('refused');
  });

  it('says FERRY_TRANSIENT when the server never answers the handshake', async () => {
    const silent: Server = createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    const port = (silent.address() as { port: number }).port;
    try {
      const client = await writeClientFiles(s);
      const t0 = Date.now();
      const err = await connectSsh({ host: '127.0.0.1', port, user: s.user }, { ...client.sshOptions, readyTimeout: 300 }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'FERRY_TRANSIENT' });
      expect((err as Error).message).toContain(`127.0.0.1:${port}`);
      expect(Date.now() - t0).toBeLessThan(5000);
    } finally {
      silent.close();
    }
  });

  it('pools one connection, several SFTP channels, and reconnects after losing it', async () => {
    const client = await writeClientFiles(s);
    const pool = new SftpPool({ host: '127.0.0.1', port: s.port, user: s.user }, client.sshOptions, { maxChannels: 3 });
    try {
      const logins = (): number => (s.log().match(/Accepted publickey/g) ?? []).length;
      const before = logins();
      const seen = new Set<unknown>();
      const realpath = (sftp: Parameters<Parameters<SftpPool['withSftp']>[0]>[0]): Promise<string> =>
        new Promise((resolve, reject) => sftp.realpath('.', (err, p) => (err ? reject(err) : resolve(p))));
      await Promise.all(
        Array.from({ length: 10 }, () =>
          pool.withSftp(async (sftp) => {
            seen.add(sftp);
            await realpath(sftp);
          }),
        ),
      );
      expect(logins()).toBe(before + 1);
      expect(seen.size).toBeGreaterThan(1);
      expect(seen.size).toBeLessThanOrEqual(3);

      const conn = await pool.connection();
      const closed = new Promise<void>((r) => conn.onClose(() => r()));
      expect(await s.killSessions()).toBeGreaterThan(0);
      await closed;
      await pool.withSftp(realpath);
      expect(logins()).toBe(before + 2);
    } finally {
      await pool.close();
    }
  });
});
