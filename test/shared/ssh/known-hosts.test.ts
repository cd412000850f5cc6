import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import ssh2 from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addKnownHost, checkHostKey, fingerprint, hashHostName, keyTypeOf, knownHostName } from '../../../src/shared/ssh/known-hosts.js';
import { SSH_KEYGEN, sshdMissing, warnIfSshdMissing } from '../../support/sshd.js';

const run = promisify(execFile);
warnIfSshdMissing();

/** A fresh public key blob and its `type base64` text. */
function newKey(type: 'ed25519' | 'ecdsa' = 'ed25519'): { blob: Buffer; text: string } {
  const pair = type === 'ecdsa' ? ssh2.utils.generateKeyPairSync('ecdsa', { bits: 256 }) : ssh2.utils.generateKeyPairSync('ed25519');
  const text = pair.public.trim().split(' ').slice(0, 2).join(' ');
  return { blob: Buffer.from(text.split(' ')[1]!, 'base64'), text };
}

describe('known_hosts', () => {
  let dir: string;
  let file: string;
  const a = newKey();
  const b = newKey();
  const e = newKey('ecdsa');
  beforeAll(async () => {
    dir = await fsp.mkdtemp(join(tmpdir(), 'ferry-known-hosts-'));
    file = join(dir, 'known_hosts');
  });
  afterAll(() => fsp.rm(dir, { recursive: true, force: true }));

  it('names hosts on other ports [host]:port', () => {
    expect(knownHostName('Example.COM', 22)).toBe('example.com');
    expect(knownHostName('example.com', 2222)).toBe('[example.com]:2222');
    expect(keyTypeOf(a.blob)).toBe('ssh-ed25519');
    expect(fingerprint(a.blob)).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
  });

  it('matches plain entries: lists, wildcards, negation, ports', async () => {
    await fsp.writeFile(
      file,
      [
        '# comment',
        `alpha,beta ${a.text}`,
        `*.wild,!bad.wild ${a.text} a comment`,
        `[alpha]:2222 ${b.text}`,
        '',
      ].join('\n'),
    );
    expect((await checkHostKey([file], 'alpha', a.blob)).status).toBe('known');
    expect((await checkHostKey([file], 'beta', a.blob)).status).toBe('known');
    expect((await checkHostKey([file], 'x.wild', a.blob)).status).toBe('known');
    expect((await checkHostKey([file], 'bad.wild', a.blob)).status).toBe('new');
    expect((await checkHostKey([file], '[alpha]:2222', b.blob)).status).toBe('known');
    // The entry for port 22 does not vouch for port 2222, nor the other way round.
    expect((await checkHostKey([file], '[alpha]:2222', a.blob))).toMatchObject({ status: 'changed', line: { file, line: 4 } });
    expect((await checkHostKey([file], 'gamma', a.blob)).status).toBe('new');
  });

  it('reports a changed key with the line of the old one', async () => {
    await fsp.writeFile(file, `# c\nother ${b.text}\nalpha ${a.text}\n`);
    const r = await checkHostKey([file], 'alpha', b.blob);
    expect(r).toMatchObject({ status: 'changed', line: { file, line: 3, keyType: 'ssh-ed25519' } });
  });

  it('treats a key of a type not on record as new, keeping the others', async () => {
    await fsp.writeFile(file, `alpha ${a.text}\n`);
    const r = await checkHostKey([file], 'alpha', e.blob);
    expect(r.status).toBe('new');
    if (r.status === 'new') expect(r.others.map((l) => l.keyType)).toEqual(['ssh-ed25519']);
  });

  it('refuses @revoked keys and ignores @cert-authority lines', async () => {
    await fsp.writeFile(file, `@revoked * ${a.text}\n@cert-authority alpha ${b.text}\nalpha ${a.text}\n`);
    expect((await checkHostKey([file], 'alpha', a.blob)).status).toBe('revoked');
    expect((await checkHostKey([file], 'alpha', b.blob)).status).toBe('changed');
  });

  it('matches hashed entries it wrote', async () => {
    await fsp.writeFile(file, `${hashHostName('[h.example]:2200')} ${a.text}\n`);
    expect((await checkHostKey([file], '[h.example]:2200', a.blob)).status).toBe('known');
    expect((await checkHostKey([file], 'h.example', a.blob)).status).toBe('new');
    expect((await checkHostKey([file], '[h.example]:2200', b.blob)).status).toBe('changed');
  });

  it.skipIf(sshdMissing !== undefined)('matches entries hashed by ssh-keygen -H', async () => {
    await fsp.writeFile(file, `hashed.example ${a.text}\n[hashed.example]:2022 ${b.text}\n`);
    await run(SSH_KEYGEN, ['-H', '-f', file]);
    const text = await fsp.readFile(file, 'utf8');
    expect(text).not.toContain('hashed.example');
    expect(text.split('\n').filter((l) => l.startsWith('|1|')).length).toBe(2);
    expect((await checkHostKey([file], 'hashed.example', a.blob)).status).toBe('known');
    expect((await checkHostKey([file], '[hashed.example]:2022', b.blob)).status).toBe('known');
    expect((await checkHostKey([file], 'hashed.example', b.blob))).toMatchObject({ status: 'changed', line: { line: 1 } });
  });

  it.skipIf(sshdMissing !== undefined)('writes hashed entries that ssh-keygen -F finds', async () => {
    await fsp.rm(file, { force: true });
    await addKnownHost(file, '[found.example]:2200', a.blob, { hash: true });
    const { stdout } = await run(SSH_KEYGEN, ['-F', '[found.example]:2200', '-f', file]);
    expect(stdout).toContain(a.text);
  });

  it('appends, creating the file and fixing a missing final newline', async () => {
    const f = join(dir, 'sub', 'known_hosts');
    await addKnownHost(f, 'one', a.blob);
    expect(await fsp.readFile(f, 'utf8')).toBe(`one ${a.text}\n`);
    expect((await fsp.stat(f)).mode & 0o777).toBe(0o600);
    await fsp.appendFile(f, `two ${b.text}`);
    await addKnownHost(f, '[three]:23', e.blob);
    expect(await fsp.readFile(f, 'utf8')).toBe(`one ${a.text}\ntwo ${b.text}\n[three]:23 ${e.text}\n`);
    expect((await checkHostKey([f], 'two', b.blob)).status).toBe('known');
  });
});
