import { promises as fsp } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseJumpHost } from '../../../src/shared/ssh/config.js';
import { connectSsh, resolveSshTarget, type SshConnection } from '../../../src/shared/ssh/connect.js';
import { makeKey, sshdMissing, startSshd, warnIfSshdMissing, writeClientFiles, type Sshd } from '../../support/sshd.js';

warnIfSshdMissing();

describe('ProxyJump hops', () => {
  it('parses [user@]host[:port], [v6]:port and ssh:// URIs as OpenSSH does', () => {
    expect(parseJumpHost('bastion')).toEqual({ host: 'bastion' });
    expect(parseJumpHost('alice@bastion:2222')).toEqual({ user: 'alice', host: 'bastion', port: 2222 });
    expect(parseJumpHost('a@b@bastion')).toEqual({ user: 'a@b', host: 'bastion' });
    expect(parseJumpHost('[::1]:2200')).toEqual({ host: '::1', port: 2200 });
    expect(parseJumpHost('ssh://bob@10.0.0.1:22')).toEqual({ user: 'bob', host: '10.0.0.1', port: 22 });
    expect(parseJumpHost('host:notaport')).toBeUndefined();
    expect(parseJumpHost('host:0')).toBeUndefined();
    expect(parseJumpHost('@host')).toBeUndefined();
    expect(parseJumpHost('')).toBeUndefined();
  });
});

describe('ProxyJump resolution', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await fsp.mkdtemp(join(tmpdir(), 'ferry-proxyjump-'));
  });
  afterAll(() => fsp.rm(dir, { recursive: true, force: true }));

  const resolve = async (config: string, host: string) => {
    const configPath = join(dir, `config-${Math.random().toString(36).slice(2)}`);
    await fsp.writeFile(configPath, config);
    return resolveSshTarget({ host }, { configPath, systemConfigPath: null, agent: false });
  };

  it('resolves each hop through the configuration under its own name', async () => {
    const r = await resolve(
      ['Host target', '  HostName 10.0.0.9', '  ProxyJump carol@mid:2222,bastion', 'Host mid', '  HostName 10.0.0.5', '  User nobody', 'Host bastion', '  HostName 192.0.2.7', '  Port 2200', '  User jumper'].join('\n'),
      'target',
    );
    expect(r).toMatchObject({ host: '10.0.0.9', port: 22 });
    // The last hop of the list is the one the target is reached from.
    expect(r.via).toMatchObject({ alias: 'bastion', host: '192.0.2.7', port: 2200, user: 'jumper', knownHostName: '[192.0.2.7]:2200' });
    expect(r.via?.via).toMatchObject({ alias: 'mid', host: '10.0.0.5', port: 2222, user: 'carol', knownHostName: '[10.0.0.5]:2222' });
    expect(r.via?.via?.via).toBeUndefined();
  });

  it("follows the first hop's own ProxyJump, not a later hop's (as ssh -J a -W t b does)", async () => {
    const r = await resolve(['Host t', '  ProxyJump a,b', 'Host a', '  ProxyJump outer', 'Host b', '  ProxyJump never'].join('\n'), 't');
    expect(r.via?.alias).toBe('b');
    expect(r.via?.via?.alias).toBe('a');
    expect(r.via?.via?.via?.alias).toBe('outer');
    expect(r.via?.via?.via?.via).toBeUndefined();
  });

  it('takes the first value: ProxyJump none disables a later one, and a ProxyCommand seen first wins', async () => {
    const config = ['Host direct', '  ProxyJump none', 'Host cmd', '  ProxyCommand nc %h %p', 'Host * !bastion', '  ProxyJump bastion'].join('\n');
    expect((await resolve(config, 'direct')).via).toBeUndefined();
    expect((await resolve(config, 'cmd')).via).toBeUndefined();
    expect((await resolve(config, 'other')).via?.alias).toBe('bastion');
  });

  it('refuses a host that is its own jump host, as OpenSSH does ("jumphost loop")', async () => {
    await expect(resolve('Host *\n  ProxyJump bastion\n', 'bastion')).rejects.toMatchObject({ code: 'FERRY_FATAL', message: expect.stringContaining('Host * !bastion') });
    // Through `Host *`, any other host reaches the bastion, whose own ProxyJump is itself.
    await expect(resolve('Host *\n  ProxyJump bastion\n', 'web')).rejects.toMatchObject({ code: 'FERRY_FATAL', message: expect.stringContaining('ProxyJump loop') });
  });

  it('refuses a longer loop and a hop that is not [user@]host[:port], naming the host', async () => {
    await expect(resolve(['Host a', '  ProxyJump b', 'Host b', '  ProxyJump a'].join('\n'), 'a')).rejects.toMatchObject({
      code: 'FERRY_FATAL',
      message: expect.stringContaining('more than 8 jump hosts'),
    });
    await expect(resolve('Host t\n  ProxyJump bastion:http\n', 't')).rejects.toMatchObject({ code: 'FERRY_FATAL', message: expect.stringContaining('"bastion:http"') });
  });
});

describe.skipIf(sshdMissing !== undefined)('ProxyJump against OpenSSH', () => {
  let jump: Sshd;
  let target: Sshd;
  const open: SshConnection[] = [];
  const user = userInfo().username;
  beforeAll(async () => {
    [jump, target] = await Promise.all([startSshd(), startSshd()]);
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((c) => c.close()));
  });
  afterAll(async () => {
    await Promise.all([jump?.cleanup(), target?.cleanup()]);
  });

  const config = (): string =>
    [
      'Host target',
      '  HostName 127.0.0.1',
      `  Port ${target.port}`,
      `  User ${user}`,
      '  ProxyJump jumpbox',
      'Host jumpbox',
      '  HostName 127.0.0.1',
      `  Port ${jump.port}`,
      `  User ${user}`,
      // Through both hosts and back to the jump host: a two-hop list with an inline hop.
      'Host roundtrip',
      '  HostName 127.0.0.1',
      `  Port ${jump.port}`,
      `  User ${user}`,
      `  ProxyJump jumpbox,${user}@127.0.0.1:${target.port}`,
    ].join('\n') + '\n';
  // Each server accepts its own client key: offer both.
  const identities = (): string[] => [jump.clientKey.path, target.clientKey.path];
  const logins = (s: Sshd): number => (s.log().match(/Accepted publickey/g) ?? []).length;

  const exec = (c: SshConnection, command: string): Promise<string> =>
    new Promise((resolve, reject) => {
      c.client.exec(command, (err, ch) => {
        if (err) return reject(err);
        let out = '';
        ch.on('data', (d: Buffer) => (out += d.toString()));
        ch.on('close', () => resolve(out));
      });
    });

  it('reaches the target through the jump host, checking and recording each host key under its own name', async () => {
    const client = await writeClientFiles(jump, { config: config(), identityFiles: identities() });
    const before = [logins(jump), logins(target)];
    const c = await connectSsh({ host: 'target' }, client.sshOptions);
    open.push(c);
    expect(await exec(c, 'echo hello')).toBe('hello\n');
    expect(c.target).toMatchObject({ port: target.port });
    expect(c.jump?.target).toMatchObject({ port: jump.port });
    expect([logins(jump), logins(target)]).toEqual([before[0]! + 1, before[1]! + 1]);
    const known = await fsp.readFile(client.knownHostsPath, 'utf8');
    expect(known).toContain(`[127.0.0.1]:${jump.port} ssh-ed25519 `);
    expect(known).toContain(`[127.0.0.1]:${target.port} ssh-ed25519 `);

    // The session runs through the jump host: dropping its sessions drops the target's connection.
    const lost = new Promise<void>((r) => c.onClose(() => r()));
    await jump.killSessions();
    await lost;
    expect(c.closed).toBe(true);
  });

  it('closes the jump connection with the final one', async () => {
    const client = await writeClientFiles(jump, { config: config(), identityFiles: identities() });
    const c = await connectSsh({ host: 'target' }, client.sshOptions);
    const hop = c.jump!;
    expect(hop.closed).toBe(false);
    await c.close();
    expect(c.closed).toBe(true);
    expect(hop.closed).toBe(true);
  });

  it('goes through a list of two hops, one of them written inline', async () => {
    const client = await writeClientFiles(jump, { config: config(), identityFiles: identities() });
    const c = await connectSsh({ host: 'roundtrip' }, client.sshOptions);
    open.push(c);
    expect(await exec(c, 'echo two hops')).toBe('two hops\n');
    expect(c.jump?.target.port).toBe(target.port);
    expect(c.jump?.jump?.target.port).toBe(jump.port);
    await c.close();
    expect(c.jump?.closed && c.jump.jump?.closed).toBe(true);
  });

  it('refuses a changed key on the jump host, naming the jump host, before reaching the target', async () => {
    const stranger = await makeKey(join(jump.dir, `stranger-${Date.now()}`));
    const jumpName = `[127.0.0.1]:${jump.port}`;
    const client = await writeClientFiles(jump, {
      config: config(),
      identityFiles: identities(),
      knownHosts: [`${jumpName} ${stranger.publicLine.split(' ').slice(0, 2).join(' ')}`],
    });
    const before = logins(target);
    const err = await connectSsh({ host: 'target' }, client.sshOptions).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'FERRY_FATAL' });
    expect((err as Error).message).toContain(jumpName);
    expect((err as Error).message).toContain('host key has changed');
    expect(logins(target)).toBe(before);
  });

  it("refuses a changed key on the target behind the jump host, naming the target", async () => {
    const stranger = await makeKey(join(jump.dir, `stranger-t-${Date.now()}`));
    const targetName = `[127.0.0.1]:${target.port}`;
    const client = await writeClientFiles(jump, {
      config: config(),
      identityFiles: identities(),
      knownHosts: [`${targetName} ${stranger.publicLine.split(' ').slice(0, 2).join(' ')}`],
    });
    const err = await connectSsh({ host: 'target' }, client.sshOptions).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'FERRY_FATAL' });
    expect((err as Error).message).toContain(targetName);
  });

  it('says FERRY_TRANSIENT naming the target and the jump host when the jump host cannot reach the target', async () => {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const closedPort = (srv.address() as { port: number }).port;
    await new Promise((r) => srv.close(r));
    const cfg = `Host nowhere\n  HostName 127.0.0.1\n  Port ${closedPort}\n  ProxyJump ${user}@127.0.0.1:${jump.port}\n`;
    const client = await writeClientFiles(jump, { config: cfg, identityFiles: identities() });
    const err = await connectSsh({ host: 'nowhere' }, client.sshOptions).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'FERRY_TRANSIENT' });
    const message = (err as Error).message;
    expect(message).toContain(`127.0.0.1:${closedPort}`);
    expect(message).toContain(`via ${user}@127.0.0.1:${jump.port}`);
  });
});
