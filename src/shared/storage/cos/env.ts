/** The environment variables the cos backend takes credentials from (index.ts, credentialsFor). */
export const credentialEnv = ['COS_SECRETID', 'COS_SECRETKEY', 'TENCENTCLOUD_SECRETID', 'TENCENTCLOUD_SECRETKEY', 'TENCENTCLOUD_SESSIONTOKEN'] as const;

/** Those of them whose values are secrets. */
export const secretEnv = ['COS_SECRETKEY', 'TENCENTCLOUD_SECRETKEY', 'TENCENTCLOUD_SESSIONTOKEN'] as const;
