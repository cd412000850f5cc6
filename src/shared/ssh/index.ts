/**
 * ferry's SSH layer: connections as OpenSSH would make them (~/.ssh/config, the agent, identity
 * files, known_hosts), and a pool of SFTP channels on one connection. The sftp backend and the
 * cluster (worker deployment, reverse port forwards) build on it.
 */
export { connectResolved, connectSsh, describeTarget, resolveSshTarget, sshError, SshConnection } from './connect.js';
export type { ResolvedSshTarget, SshOptions, SshTarget } from './connect.js';
export { addKnownHost, checkHostKey, fingerprint, knownHostName } from './known-hosts.js';
export { channelOpen, SftpPool } from './pool.js';
