/**
 * The environment variables the s3 backend takes credentials from: its own (config.ts reads
 * AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN) and, when neither the address nor
 * those hold keys, the AWS SDK's default chain (profiles, web identity, container credentials).
 * No module here loads the SDK: the registry lists these without loading the backend.
 */
export const credentialEnv = [
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'AWS_PROFILE',
  'AWS_SHARED_CREDENTIALS_FILE',
  'AWS_CONFIG_FILE',
  'AWS_WEB_IDENTITY_TOKEN_FILE',
  'AWS_ROLE_ARN',
  'AWS_ROLE_SESSION_NAME',
  'AWS_CONTAINER_CREDENTIALS_RELATIVE_URI',
  'AWS_CONTAINER_CREDENTIALS_FULL_URI',
  'AWS_CONTAINER_AUTHORIZATION_TOKEN',
  'AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE',
  // Not credentials, but what they sign for: a worker must use the manager's region.
  'AWS_REGION',
  'AWS_DEFAULT_REGION',
] as const;

/** Those of them whose values are secrets. */
export const secretEnv = ['AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_CONTAINER_AUTHORIZATION_TOKEN'] as const;
