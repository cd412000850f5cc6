import { parseAddress, type Address } from './address.js';
import { NotSupportedYetError, UnsupportedSchemeError } from '../errors.js';
import { withPrefix } from './prefixed.js';
import type { ObjectStore } from './types.js';

/** What a backend gets besides its address: options of the run that change how it talks. */
export interface OpenOptions {
  /** Speak plain HTTP to endpoints that would otherwise get HTTPS (`--no-https`). */
  noHttps?: boolean;
  storageClass?: string;
  /** Write in place instead of to a temporary name renamed into place (`--inplace`). */
  inplace?: boolean;
  /** Concurrency the caller will use, so a backend can size its connection pool. */
  concurrency?: number;
  /** Environment to read credentials from (defaults to process.env). */
  env?: NodeJS.ProcessEnv;
}

export interface Backend {
  scheme: string;
  /** Other schemes that open the same backend (minio → s3). */
  aliases?: string[];
  /** One line for --help and for the list of supported schemes. */
  summary: string;
  /**
   * The environment variables the backend takes credentials from (what a worker elsewhere must be
   * given to open the same store), e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN.
   */
  credentialEnv?: readonly string[];
  /** Those of `credentialEnv` whose values are secrets: redacted from everything ferry shows. */
  secretEnv?: readonly string[];
  /** Open the store rooted at the address's bucket (or directory); the prefix is applied by the caller. */
  open(address: Address, options: OpenOptions): Promise<ObjectStore>;
}

/** Schemes of juicefs's address syntax that ferry does not have yet: "not supported yet", not "unknown". */
const PLANNED: Record<string, string> = {
  gs: 'Google Cloud Storage',
  wasb: 'Azure Blob Storage',
  azure: 'Azure Blob Storage',
  webdav: 'WebDAV',
  obs: 'Huawei OBS',
  bos: 'Baidu BOS',
  ks3: 'Kingsoft KS3',
  qingstor: 'QingStor',
  b2: 'Backblaze B2',
  nfs: 'NFS',
  jfs: 'JuiceFS volumes',
};

export class BackendRegistry {
  readonly #backends = new Map<string, Backend>();

  register(backend: Backend): void {
    for (const s of [backend.scheme, ...(backend.aliases ?? [])]) this.#backends.set(s, backend);
  }

  get(scheme: string): Backend | undefined {
    return this.#backends.get(scheme);
  }

  schemes(): string[] {
    return [...this.#backends.keys()].sort();
  }

  /** Every registered backend's credentialEnv, once each. */
  credentialEnv(): string[] {
    return this.#union((b) => b.credentialEnv);
  }

  /** Every registered backend's secretEnv, once each. */
  secretEnv(): string[] {
    return this.#union((b) => b.secretEnv);
  }

  #union(of: (b: Backend) => readonly string[] | undefined): string[] {
    const names = new Set<string>();
    for (const b of this.#backends.values()) for (const n of of(b) ?? []) names.add(n);
    return [...names].sort();
  }

  /** Open the store an address names, rooted at its prefix: keys are relative to it. */
  async open(address: string | Address, options: OpenOptions = {}): Promise<ObjectStore> {
    const a = typeof address === 'string' ? parseAddress(address) : address;
    const backend = this.#backends.get(a.scheme);
    if (!backend) {
      const planned = PLANNED[a.scheme];
      if (planned) throw new NotSupportedYetError(`${a.scheme}:// (${planned}) is not supported yet in this version of ferry`);
      throw new UnsupportedSchemeError(`unknown storage scheme ${JSON.stringify(a.scheme + '://')} in ${a.display}; supported: ${this.schemes().map((s) => s + '://').join(', ')} and local paths`);
    }
    const store = await backend.open(a, options);
    return a.prefix === '' ? store : withPrefix(store, a.prefix);
  }
}
