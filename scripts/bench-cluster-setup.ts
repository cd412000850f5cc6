// The cluster benchmark's fixture, run as a child of scripts/bench-cluster.mjs (bundled by esbuild
// into .bench/): `n` test hosts in network namespaces (test/support/hosts.ts) and the project's s3
// test server on the bridge address, so every host reaches it over its own link.
//
// Usage: node --openssl-legacy-provider bench-cluster-setup.mjs N [RATE_MBIT]
// Prints one JSON line describing the fixture, then reads JSON commands, one a line, on standard
// input and answers each with one JSON line: {"cmd":"bucket","name":…}, {"cmd":"cap","host":i,
// "mbit":m} (0: no cap), {"cmd":"close"}. Standard input closing (the benchmark died) closes
// everything too: the hosts (namespaces, bridge, sshd and whatever runs in them), the s3 server and
// its directory.
import { createInterface } from 'node:readline';
import { hostsUnavailable, startHosts, type TestHosts } from '../test/support/hosts.js';
import { startS3Server, type S3TestServer } from '../test/support/s3-server.js';

const n = Number(process.argv[2] ?? '3');
const rate = process.argv[3] ? Number(process.argv[3]) : undefined;
const SRC_KEY = 'BENCHSRCKEY';
const SRC_SECRET = 'bench-src-secret';
const say = (o: unknown): void => void process.stdout.write(JSON.stringify(o) + '\n');

if (hostsUnavailable) {
  say({ skipped: hostsUnavailable });
  process.exit(0);
}

let hosts: TestHosts | undefined;
let s3: S3TestServer | undefined;
let closing: Promise<void> | undefined;
const close = (): Promise<void> =>
  (closing ??= (async () => {
    await s3?.close().catch(() => {});
    await hosts?.close().catch(() => {});
  })());

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, () => void close().then(() => process.exit(1)));

try {
  hosts = await startHosts(n, rate ? { rateMbit: rate } : {});
  // A second access key for the source side: ferry copies server-side (CopyObject) between two
  // buckets of one endpoint and account, so the same key on both sides would move no byte through
  // the executors. Another key is another account to ferry: every byte goes GET → executor → PUT.
  s3 = await startS3Server({ address: hosts.bridgeIp, credentials: { [SRC_KEY]: SRC_SECRET } });
} catch (err) {
  await close();
  say({ error: String((err as Error)?.stack ?? err) });
  process.exit(1);
}

say({
  bridgeIp: hosts.bridgeIp,
  home: hosts.clientFiles.home,
  endpoint: s3.endpoint,
  accessKey: s3.accessKey,
  secretKey: s3.secretKey,
  srcAccessKey: SRC_KEY,
  srcSecretKey: SRC_SECRET,
  s3Directory: s3.directory,
  // pids: the host's sshd (its only process now); what the sessions run is reaped into its CPU times.
  hosts: await Promise.all(hosts.hosts.map(async (h) => ({ name: h.name, sshAddr: h.sshAddr, netns: h.netns, veth: h.veth, cacheDir: h.cacheDir, pids: await hosts!.pids(h) }))),
});

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  void (async () => {
    let cmd: { cmd: string; name?: string; host?: number; mbit?: number };
    try {
      cmd = JSON.parse(line);
    } catch {
      return say({ error: `not JSON: ${line}` });
    }
    try {
      if (cmd.cmd === 'bucket') {
        await s3!.createBucket(cmd.name!);
        say({ ok: true });
      } else if (cmd.cmd === 'cap') {
        await hosts!.capRate(hosts!.hosts[cmd.host!]!, cmd.mbit ?? 0);
        say({ ok: true });
      } else if (cmd.cmd === 'close') {
        await close();
        say({ ok: true });
        process.exit(0);
      } else {
        say({ error: `unknown command ${cmd.cmd}` });
      }
    } catch (err) {
      say({ error: String((err as Error)?.message ?? err) });
    }
  })();
});
rl.on('close', () => void close().then(() => process.exit(0)));
