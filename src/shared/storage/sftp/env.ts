/**
 * The environment variables the sftp backend takes credentials from: the SSH agent's socket
 * (ssh/connect.ts). Keys and known hosts are files, named by ~/.ssh/config; passwords come only
 * from the address.
 */
export const credentialEnv = ['SSH_AUTH_SOCK'] as const;

/** None of them holds a secret itself. */
export const secretEnv = [] as const;
