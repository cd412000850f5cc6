import { defaultRegistry } from './storage/all.js';

/**
 * Secrets users keep in the environment for the services ferry reaches, under names no backend
 * reads (so no backend declares them): redacted all the same.
 */
const CONVENTIONAL_SECRET_ENV = ['COS_SECRET_KEY', 'MINIO_SECRET_KEY', 'MINIO_ROOT_PASSWORD'];

/**
 * Removes known secrets from any text before it reaches a user: log lines, progress, errors.
 * Knows each secret in its plain and percent-encoded forms. From the start it knows the values in
 * `env` of every registered backend's secret variables (Backend.secretEnv).
 */
export class Redactor {
  readonly #secrets = new Set<string>();

  constructor(env: NodeJS.ProcessEnv = process.env, secretEnv: Iterable<string> = defaultRegistry().secretEnv()) {
    for (const name of secretEnv) this.add(env[name]);
    for (const name of CONVENTIONAL_SECRET_ENV) this.add(env[name]);
  }

  add(secret: string | undefined): void {
    if (!secret || secret.length < 3) return;
    this.#secrets.add(secret);
    this.#secrets.add(encodeURIComponent(secret));
  }

  redact(text: string): string {
    let out = text;
    for (const s of this.#secrets) if (out.includes(s)) out = out.split(s).join('****');
    return out;
  }
}
