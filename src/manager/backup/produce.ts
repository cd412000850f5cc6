import type { ObjectStore } from '../../shared/storage/types.js';
import type { ProduceDump } from './schedule.js';

/** `--backup-meta`'s dump of SRC: `ferry dump`'s own writer, as `.json.gz` (loaded when a backup is due). */
export function dumpProducer(source: ObjectStore, setting: Record<string, unknown>): ProduceDump {
  return async (out, signal) => {
    const { writeDump } = await import('../dump/dump.js');
    return writeDump(source, out, { format: 'json.gz', setting, signal });
  };
}
