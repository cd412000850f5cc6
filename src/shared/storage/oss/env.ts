/** The environment variables the oss backend takes credentials from (config.ts, resolveCredentials). */
export const credentialEnv = [
  'ALIBABA_CLOUD_ACCESS_KEY_ID',
  'ALIBABA_CLOUD_ACCESS_KEY_SECRET',
  'ALIBABA_CLOUD_SECURITY_TOKEN',
  'OSS_ACCESS_KEY_ID',
  'OSS_ACCESS_KEY_SECRET',
  'OSS_SESSION_TOKEN',
] as const;

/** Those of them whose values are secrets. */
export const secretEnv = ['ALIBABA_CLOUD_ACCESS_KEY_SECRET', 'ALIBABA_CLOUD_SECURITY_TOKEN', 'OSS_ACCESS_KEY_SECRET', 'OSS_SESSION_TOKEN'] as const;
