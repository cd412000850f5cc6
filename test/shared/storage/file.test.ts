import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStore } from '../../../src/shared/storage/file/index.js';
import { describeConformance } from './conformance.js';

describeConformance('file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-file-'));
  return {
    store: new FileStore(dir + '/'),
    emptySegments: false,
    maxKeyBytes: 1024,
    maxNameBytes: 255,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});
