/**
 * The cluster examples in docs/ (docs/cluster.md explains them): docs/slurm.sbatch and
 * docs/kubernetes.yaml. The batch script also runs for real, under a test Slurm, in
 * test/e2e/slurm.test.ts; Kubernetes cannot run here, so the manifest is checked for what can be
 * checked offline: it parses into the objects it should, its fields are ones the Kubernetes API has
 * (for the kinds it uses), the pieces are wired to each other, every ferry flag in it exists, and
 * the init container's script works.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const ROOT = join(__dirname, '..');
const FERRY = join(ROOT, 'bin', 'ferry.js');
const SBATCH = join(ROOT, 'docs', 'slurm.sbatch');
const MANIFEST = join(ROOT, 'docs', 'kubernetes.yaml');
const run = promisify(execFile);

function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}
const bash = which('bash');
const kubectl = which('kubectl');
if (!bash) console.log('skipping the check of docs/slurm.sbatch: bash is not installed');
if (!kubectl) console.log('skipping the checks of docs/kubernetes.yaml: kubectl is not installed');

/** The long options `ferry <command> --help` lists. */
function flagsOf(command: 'sync' | 'worker'): Set<string> {
  const help = execFileSync(process.execPath, [FERRY, command, '--help'], { encoding: 'utf8' });
  return new Set([...help.matchAll(/(?:^|[\s,])(--[a-z][a-z0-9-]*)/g)].map((m) => m[1]!));
}

describe('docs/slurm.sbatch', () => {
  it.skipIf(!bash)('is valid bash', () => {
    const r = spawnSync(bash!, ['-n', SBATCH], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
  });

  it('uses only flags ferry has, and keeps the token in a file and the environment away from the workers', () => {
    const text = readFileSync(SBATCH, 'utf8');
    const sync = flagsOf('sync');
    const worker = flagsOf('worker');
    const syncLine = /ferry sync [^\n]*\\\n[^\n]*/.exec(text)?.[0] ?? '';
    const workerLine = /exec ferry worker [^']*/.exec(text)?.[0] ?? '';
    expect(syncLine).not.toBe('');
    expect(workerLine).not.toBe('');
    for (const f of syncLine.match(/--[a-z][a-z0-9-]*/g) ?? []) expect(sync.has(f), `ferry sync ${f}`).toBe(true);
    for (const f of workerLine.match(/--[a-z][a-z0-9-]*/g) ?? []) expect(worker.has(f), `ferry worker ${f}`).toBe(true);
    expect(syncLine).toMatch(/--listen "\$ADDR:\$PORT" --token-file "\$TOKEN_FILE"/);
    expect(workerLine).toMatch(/--token-file "\$2"/);
    expect(text).toMatch(/srun --export=PATH,HOME /);
    expect(text).not.toMatch(/FERRY_TOKEN=/);
  });
});

// Kubernetes API fields (v1.29+) of the object types the manifest uses: what `kubectl --validate`
// would check against the server's schema, which is not reachable here.
const FIELDS: Record<string, string[]> = {
  object: ['apiVersion', 'kind', 'metadata', 'spec', 'type', 'stringData', 'data', 'immutable'],
  metadata: ['name', 'namespace', 'labels', 'annotations', 'creationTimestamp'],
  serviceSpec: ['type', 'selector', 'ports', 'clusterIP', 'sessionAffinity', 'internalTrafficPolicy', 'ipFamilyPolicy'],
  servicePort: ['name', 'port', 'targetPort', 'protocol', 'appProtocol', 'nodePort'],
  jobSpec: ['parallelism', 'completions', 'completionMode', 'backoffLimit', 'backoffLimitPerIndex', 'maxFailedIndexes', 'activeDeadlineSeconds', 'ttlSecondsAfterFinished', 'template', 'selector', 'manualSelector', 'suspend', 'podFailurePolicy', 'podReplacementPolicy'],
  template: ['metadata', 'spec'],
  podSpec: ['restartPolicy', 'containers', 'initContainers', 'volumes', 'serviceAccountName', 'securityContext', 'nodeSelector', 'affinity', 'tolerations', 'subdomain', 'hostname', 'imagePullSecrets', 'terminationGracePeriodSeconds', 'activeDeadlineSeconds', 'priorityClassName'],
  container: ['name', 'image', 'command', 'args', 'env', 'envFrom', 'ports', 'volumeMounts', 'resources', 'workingDir', 'imagePullPolicy', 'securityContext', 'readinessProbe', 'livenessProbe', 'startupProbe', 'lifecycle', 'stdin', 'tty', 'terminationMessagePath', 'terminationMessagePolicy'],
  envVar: ['name', 'value', 'valueFrom'],
  envFrom: ['secretRef', 'configMapRef', 'prefix'],
  containerPort: ['name', 'containerPort', 'protocol', 'hostPort', 'hostIP'],
  volumeMount: ['name', 'mountPath', 'readOnly', 'subPath', 'subPathExpr', 'mountPropagation', 'recursiveReadOnly'],
  volume: ['name', 'secret', 'configMap', 'emptyDir', 'persistentVolumeClaim', 'downwardAPI', 'projected', 'hostPath', 'nfs', 'csi'],
  secretVolume: ['secretName', 'defaultMode', 'items', 'optional'],
  keyToPath: ['key', 'path', 'mode'],
  resources: ['requests', 'limits', 'claims'],
};

function unknownFields(o: Record<string, any>): string[] {
  const bad: string[] = [];
  const check = (what: string, v: unknown, where: string): void => {
    if (v === undefined) return;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      bad.push(`${where}: not an object`);
      return;
    }
    for (const k of Object.keys(v)) if (!FIELDS[what]!.includes(k)) bad.push(`${where}.${k}`);
  };
  const at = `${o['kind']}/${o['metadata']?.['name']}`;
  check('object', o, at);
  check('metadata', o['metadata'], `${at}.metadata`);
  const spec = o['spec'];
  if (o['kind'] === 'Service') {
    check('serviceSpec', spec, `${at}.spec`);
    (spec?.ports ?? []).forEach((p: unknown, i: number) => check('servicePort', p, `${at}.spec.ports[${i}]`));
  }
  if (o['kind'] === 'Job') {
    check('jobSpec', spec, `${at}.spec`);
    check('template', spec?.template, `${at}.spec.template`);
    check('metadata', spec?.template?.metadata, `${at}.spec.template.metadata`);
    const pod = spec?.template?.spec;
    check('podSpec', pod, `${at}.pod`);
    for (const [list, cs] of [['containers', pod?.containers], ['initContainers', pod?.initContainers]] as const) {
      (cs ?? []).forEach((c: Record<string, any>, i: number) => {
        const w = `${at}.pod.${list}[${i}]`;
        check('container', c, w);
        (c['env'] ?? []).forEach((e: unknown, j: number) => check('envVar', e, `${w}.env[${j}]`));
        (c['envFrom'] ?? []).forEach((e: unknown, j: number) => check('envFrom', e, `${w}.envFrom[${j}]`));
        (c['ports'] ?? []).forEach((p: unknown, j: number) => check('containerPort', p, `${w}.ports[${j}]`));
        (c['volumeMounts'] ?? []).forEach((m: unknown, j: number) => check('volumeMount', m, `${w}.volumeMounts[${j}]`));
        check('resources', c['resources'], `${w}.resources`);
      });
    }
    (pod?.volumes ?? []).forEach((v: Record<string, any>, i: number) => {
      check('volume', v, `${at}.pod.volumes[${i}]`);
      check('secretVolume', v['secret'], `${at}.pod.volumes[${i}].secret`);
      (v['secret']?.items ?? []).forEach((it: unknown, j: number) => check('keyToPath', it, `${at}.pod.volumes[${i}].secret.items[${j}]`));
    });
  }
  return bad;
}

describe.skipIf(!kubectl)('docs/kubernetes.yaml', () => {
  /**
   * The manifest's objects as kubectl reads them. `kubectl create --dry-run=client` needs a server
   * even so (API discovery, and the schema for --validate), and none runs here: `kubectl label
   * --local` parses the same way without one.
   */
  async function objects(): Promise<Record<string, any>[]> {
    const { stdout } = await run(kubectl!, ['label', '--local', '-f', MANIFEST, '-o', 'json', 'ferry.test/checked=yes'], { env: { PATH: process.env['PATH'] ?? '', KUBECONFIG: '/dev/null' } });
    // One JSON object per document, one after the other.
    const out: Record<string, any>[] = [];
    let depth = 0;
    let start = -1;
    let inString = false;
    for (let i = 0; i < stdout.length; i++) {
      const ch = stdout[i];
      if (inString) {
        if (ch === '\\') i++;
        else if (ch === '"') inString = false;
      } else if (ch === '"') inString = true;
      else if (ch === '{') {
        if (depth++ === 0) start = i;
      } else if (ch === '}' && --depth === 0) out.push(JSON.parse(stdout.slice(start, i + 1)));
    }
    return out;
  }

  it('parses into a token Secret, a storage Secret, the manager Service, the manager Job and an Indexed worker Job, with known fields only', async () => {
    const objs = await objects();
    expect(objs.map((o) => `${o['apiVersion']} ${o['kind']}/${o['metadata']['name']}`)).toEqual([
      'v1 Secret/ferry-token',
      'v1 Secret/ferry-storage',
      'v1 Service/ferry-manager',
      'batch/v1 Job/ferry-manager',
      'batch/v1 Job/ferry-workers',
    ]);
    expect(objs.flatMap(unknownFields)).toEqual([]);
  });

  it('wires them together: the token file, the Service to the manager, the index into --name, credentials for the manager only', async () => {
    const objs = await objects();
    const get = (kind: string, name: string) => objs.find((o) => o['kind'] === kind && o['metadata']['name'] === name)!;
    const token = get('Secret', 'ferry-token');
    const service = get('Service', 'ferry-manager');
    const managerJob = get('Job', 'ferry-manager');
    const workers = get('Job', 'ferry-workers');
    const managerPod = managerJob['spec']['template'];
    const workerPod = workers['spec']['template'];
    const manager = managerPod['spec']['containers'][0];
    const worker = workerPod['spec']['containers'][0];

    // The Service selects the manager's pod (and not the workers'), on the port the manager listens on.
    const selector = service['spec']['selector'] as Record<string, string>;
    for (const [k, v] of Object.entries(selector)) expect(managerPod['metadata']['labels'][k]).toBe(v);
    expect(Object.entries(selector).every(([k, v]) => workerPod['metadata']['labels'][k] === v)).toBe(false);
    const listen = manager['args'][manager['args'].indexOf('--listen') + 1] as string;
    expect(listen).toBe(`0.0.0.0:${service['spec']['ports'][0]['targetPort']}`);
    const managerUrl = worker['args'][worker['args'].indexOf('--manager') + 1] as string;
    expect(managerUrl).toBe(`ws://${service['metadata']['name']}:${service['spec']['ports'][0]['port']}`);

    // Both read the token from the file the Secret's key becomes.
    expect(Object.keys(token['stringData'])).toEqual(['token']);
    for (const [pod, c] of [[managerPod, manager], [workerPod, worker]]) {
      const tokenFile = c['args'][c['args'].indexOf('--token-file') + 1] as string;
      const mount = c['volumeMounts'].find((m: any) => tokenFile.startsWith(m['mountPath'] + '/'));
      expect(mount, `${c['name']}: no volume at ${tokenFile}`).toBeDefined();
      const volume = pod['spec']['volumes'].find((v: any) => v['name'] === mount['name']);
      expect(volume['secret']['secretName']).toBe('ferry-token');
      expect(volume['secret']['items']).toEqual([{ key: 'token', path: tokenFile.slice(mount['mountPath'].length + 1) }]);
      expect(JSON.stringify(c['env'] ?? [])).not.toMatch(/token/i);
    }

    // Indexed workers, all at once, named by their index.
    expect(workers['spec']).toMatchObject({ completionMode: 'Indexed' });
    expect(workers['spec']['parallelism']).toBe(workers['spec']['completions']);
    expect(worker['args'][worker['args'].indexOf('--name') + 1]).toBe('worker-$(JOB_COMPLETION_INDEX)');
    expect(worker['env']).toContainEqual({ name: 'JOB_COMPLETION_INDEX', valueFrom: { fieldRef: { fieldPath: "metadata.annotations['batch.kubernetes.io/job-completion-index']" } } });

    // Storage credentials go to the manager only.
    expect(manager['envFrom']).toEqual([{ secretRef: { name: 'ferry-storage' } }]);
    expect(JSON.stringify(workerPod)).not.toMatch(/ferry-storage|AWS_|secretKeyRef/);

    // Every flag is one ferry has.
    expect(manager['command']).toEqual(['ferry']);
    expect(worker['command']).toEqual(['ferry']);
    expect(manager['args'][0]).toBe('sync');
    expect(worker['args'][0]).toBe('worker');
    const sync = flagsOf('sync');
    const workerFlags = flagsOf('worker');
    for (const f of (manager['args'] as string[]).filter((a) => a.startsWith('--'))) expect(sync.has(f), `ferry sync ${f}`).toBe(true);
    for (const f of (worker['args'] as string[]).filter((a) => a.startsWith('--'))) expect(workerFlags.has(f), `ferry worker ${f}`).toBe(true);
  });

  it('passes kubectl create --dry-run=client (against a stand-in for the API server\'s discovery documents)', async () => {
    // kubectl resolves each kind through the API server's discovery documents even for a client-side
    // dry run; this serves those of the kinds the manifest uses (schema validation would need the
    // whole OpenAPI document, so it is off: the field list above stands in for it).
    const docs: Record<string, unknown> = {
      '/api': { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: '127.0.0.1' }] },
      '/apis': { kind: 'APIGroupList', apiVersion: 'v1', groups: [{ name: 'batch', versions: [{ groupVersion: 'batch/v1', version: 'v1' }], preferredVersion: { groupVersion: 'batch/v1', version: 'v1' } }] },
      '/api/v1': { kind: 'APIResourceList', groupVersion: 'v1', resources: [['secrets', 'Secret'], ['services', 'Service'], ['configmaps', 'ConfigMap']].map(([name, kind]) => ({ name, singularName: '', namespaced: true, kind, verbs: ['create', 'get'] })) },
      '/apis/batch/v1': { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: 'batch/v1', resources: [{ name: 'jobs', singularName: '', namespaced: true, kind: 'Job', verbs: ['create', 'get'] }] },
    };
    const server = createHttpServer((req, res) => {
      const doc = docs[(req.url ?? '').split('?')[0]!];
      res.writeHead(doc ? 200 : 404, { 'content-type': 'application/json' }).end(JSON.stringify(doc ?? { kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 404 }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as { port: number }).port;
      const { stdout } = await run(kubectl!, ['--server', `http://127.0.0.1:${port}`, 'create', '--dry-run=client', '--validate=false', '-o', 'name', '-f', MANIFEST], { env: { PATH: process.env['PATH'] ?? '', KUBECONFIG: '/dev/null', HOME: '/nonexistent' } });
      expect(stdout.trim().split('\n')).toEqual(['secret/ferry-token', 'secret/ferry-storage', 'service/ferry-manager', 'job.batch/ferry-manager', 'job.batch/ferry-workers']);
    } finally {
      server.close();
    }
  });

  it("the init container's script waits until the manager's port answers, then exits 0", async () => {
    const objs = await objects();
    const init = objs.find((o) => o['metadata']['name'] === 'ferry-workers')!['spec']['template']['spec']['initContainers'][0];
    expect(init['command'].slice(0, 2)).toEqual(['node', '-e']);
    const script = init['command'][2] as string;
    expect(script).toContain("net.connect(7070, 'ferry-manager'");
    // The same script against a port here that starts listening a moment later.
    const server = createServer((s) => s.destroy());
    const port = await new Promise<number>((resolve) => {
      const probe = createServer();
      probe.listen(0, '127.0.0.1', () => {
        const p = (probe.address() as { port: number }).port;
        probe.close(() => resolve(p));
      });
    });
    const local = script.replace("net.connect(7070, 'ferry-manager'", `net.connect(${port}, '127.0.0.1'`).replace('setTimeout(attempt, 2000)', 'setTimeout(attempt, 100)');
    const child = run(process.execPath, ['-e', local], { timeout: 10_000 });
    await new Promise((r) => setTimeout(r, 400));
    server.listen(port, '127.0.0.1');
    try {
      await expect(child).resolves.toBeDefined();
    } finally {
      server.close();
    }
  });
});

it('the docs exist where docs/cluster.md says', () => {
  for (const f of [SBATCH, MANIFEST, join(ROOT, 'docs', 'cluster.md')]) expect(existsSync(f), f).toBe(true);
  const md = readFileSync(join(ROOT, 'docs', 'cluster.md'), 'utf8');
  expect(md).toContain('docs/slurm.sbatch');
  expect(md).toContain('docs/kubernetes.yaml');
});
