/** Environment variables that hold secrets, whatever the provider. */
const SECRET_ENV = [
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'ALIBABA_CLOUD_ACCESS_KEY_SECRET',
  'ALIBABA_CLOUD_SECURITY_TOKEN',
  'OSS_ACCESS_KEY_SECRET',
  'OSS_SESSION_TOKEN',
  'COS_SECRETKEY',
  'COS_SECRET_KEY',
  'TENCENTCLOUD_SECRETKEY',
  'TENCENTCLOUD_SESSIONTOKEN',
  'MINIO_SECRET_KEY',
  'MINIO_ROOT_PASSWORD',
];

/**
 * Removes known secrets from any text before it reaches a user: log lines, progress, errors.
 * Knows each secret in its plain and percent-encoded forms.
 */
export class Redactor {
  readonly #secrets = new Set<string>();

  constructor(env: NodeJS.ProcessEnv = process.env) {
    for (const name of SECRET_ENV) this.add(env[name]);
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
