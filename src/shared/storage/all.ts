import { fileBackend } from './file/index.js';
import { memBackend, type MemSpace } from './mem.js';
import { BackendRegistry } from './registry.js';

/**
 * Every backend ferry ships, registered. A backend module exports its `Backend`; adding one is a
 * line here.
 */
export function defaultRegistry(options: { mem?: MemSpace } = {}): BackendRegistry {
  const r = new BackendRegistry();
  r.register(fileBackend);
  r.register(memBackend(options.mem));
  return r;
}
