import { promises as fsp } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { matchPatternList, readSshConfig, splitConfigLine } from '../../../src/shared/ssh/config.js';
import { resolveSshTarget, type SshOptions } from '../../../src/shared/ssh/connect.js';

const home = homedir();

describe('ssh config resolution', () => {
  let dir: string;
  let options: SshOptions;
  beforeAll(async () => {
    dir = await fsp.mkdtemp(join(tmpdir(), 'ferry-ssh-config-'));
    await fsp.mkdir(join(dir, 'conf.d'));
    await fsp.writeFile(
      join(dir, 'config'),
      [
        '# a comment',
        'Include conf.d/*.conf',
        'Host *.example.com !bad.example.com',
        '  User alice',
        '  IdentityFile ~/.ssh/id_example',
        '',
        'Host web?',
        '  HostName %h.internal',
        '  Port 2200',
        '',
        'Host web1',
        '  # Port was already given by "Host web?": the first value wins.',
        '  Port 9999',
        '  User webadmin',
        '',
        'Match exec "false"',
        '  User never',
        '',
        'Host quoted',
        '  HOSTNAME=real.example.org',
        '  identityfile "/keys/with space/id"',
        '  IdentityFile /keys/%r@%h:%p',
        '  User bob',
        '',
        'Host *',
        '  User fallback',
        '  IdentityFile ~/.ssh/id_all',
        '  ConnectTimeout 7',
        '',
      ].join('\n'),
    );
    await fsp.writeFile(join(dir, 'conf.d', 'extra.conf'), 'Host included\n  HostName inc.example.net\n  Port 2022\n');
    options = { configPath: join(dir, 'config'), systemConfigPath: null, identityFiles: ['/default/key'], agent: false };
  });
  afterAll(() => fsp.rm(dir, { recursive: true, force: true }));

  it('applies matching Host blocks, first value per keyword, IdentityFile accumulating', async () => {
    const r = await resolveSshTarget({ host: 'a.example.com' }, options);
    expect(r).toMatchObject({ host: 'a.example.com', user: 'alice', port: 22, knownHostName: 'a.example.com', readyTimeout: 7000 });
    expect(r.identityFiles).toEqual([join(home, '.ssh/id_example'), join(home, '.ssh/id_all')]);
  });

  it('honours negated patterns', async () => {
    const r = await resolveSshTarget({ host: 'bad.example.com' }, options);
    expect(r.user).toBe('fallback');
    expect(r.identityFiles).toEqual([join(home, '.ssh/id_all')]);
  });

  it('expands %h in HostName and matches ? patterns, case-insensitively', async () => {
    const r = await resolveSshTarget({ host: 'WEB1' }, options);
    expect(r).toMatchObject({ alias: 'WEB1', host: 'web1.internal', port: 2200, user: 'webadmin', knownHostName: '[web1.internal]:2200' });
    const web22 = await resolveSshTarget({ host: 'web22' }, options);
    expect(web22).toMatchObject({ host: 'web22', port: 22, user: 'fallback' });
  });

  it('lets the address override User and Port', async () => {
    const r = await resolveSshTarget({ host: 'web1', user: 'carol', port: 2222 }, options);
    expect(r).toMatchObject({ host: 'web1.internal', user: 'carol', port: 2222 });
  });

  it('reads keyword=value, quoted arguments and %r/%h/%p in IdentityFile', async () => {
    const r = await resolveSshTarget({ host: 'quoted' }, options);
    expect(r).toMatchObject({ host: 'real.example.org', user: 'bob' });
    expect(r.identityFiles).toEqual(['/keys/with space/id', '/keys/bob@real.example.org:22', join(home, '.ssh/id_all')]);
  });

  it('follows Include with a glob, relative to the config directory', async () => {
    const r = await resolveSshTarget({ host: 'included' }, options);
    expect(r).toMatchObject({ host: 'inc.example.net', port: 2022, user: 'fallback' });
  });

  it('skips Match blocks it cannot evaluate', async () => {
    const r = await resolveSshTarget({ host: 'other' }, options);
    expect(r.user).toBe('fallback');
  });

  it('uses the default identities and known_hosts when the config names none', async () => {
    const r = await resolveSshTarget({ host: 'x' }, { ...options, configPath: join(dir, 'missing') });
    expect(r.identityFiles).toEqual(['/default/key']);
    const noOverride = await resolveSshTarget({ host: 'x' }, { configPath: join(dir, 'missing'), systemConfigPath: null, agent: false });
    expect(noOverride.identityFiles).toEqual(['id_ed25519', 'id_ecdsa', 'id_rsa'].map((n) => join(home, '.ssh', n)));
    expect(noOverride.knownHostsFiles).toEqual([join(home, '.ssh/known_hosts')]);
  });

  it('takes the agent from SSH_AUTH_SOCK unless told otherwise', async () => {
    const env = { SSH_AUTH_SOCK: '/tmp/agent.sock' };
    const base = { configPath: join(dir, 'missing'), systemConfigPath: null, env };
    expect((await resolveSshTarget({ host: 'x' }, base)).agent).toBe('/tmp/agent.sock');
    expect((await resolveSshTarget({ host: 'x' }, { ...base, agent: false })).agent).toBeUndefined();
    expect((await resolveSshTarget({ host: 'x' }, { ...base, env: {} })).agent).toBeUndefined();
  });

  it('reads the system file after the user file', async () => {
    const system = join(dir, 'system_config');
    await fsp.writeFile(system, 'Host *\n  User systemuser\n  Port 2345\n');
    const r = await resolveSshTarget({ host: 'a.example.com' }, { ...options, systemConfigPath: system });
    expect(r).toMatchObject({ user: 'alice', port: 2345 });
  });

  it('splits lines and matches pattern lists like OpenSSH', async () => {
    expect(splitConfigLine('Host  a b  "c d"')).toEqual(['Host', 'a', 'b', 'c d']);
    expect(splitConfigLine('Port=22')).toEqual(['Port', '22']);
    expect(splitConfigLine('Port = 22 # comment')).toEqual(['Port', '22']);
    expect(matchPatternList('db1.prod', ['*.prod', '!db?.prod'])).toBe(false);
    expect(matchPatternList('web.prod', ['*.prod', '!db?.prod'])).toBe(true);
    expect(matchPatternList('a.b', ['a?b'])).toBe(true);
    expect(matchPatternList('axxb', ['a?b'])).toBe(false);
    const v = await readSshConfig('nothing', { user: join(dir, 'does-not-exist') });
    expect(v).toEqual({ identityFiles: [] });
  });
});
