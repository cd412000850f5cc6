import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStore } from '../../../src/shared/storage/file/index.js';
import { describeConformance, localTemporaries } from './conformance.js';
import { describeTreeSafety } from './tree-safety.js';

describeConformance('file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-file-'));
  return {
    store: new FileStore(dir + '/'),
    emptySegments: false,
    maxKeyBytes: 1024,
    maxNameBytes: 255,
    temporaries: () => localTemporaries(dir),
    openInplace: async () => new FileStore(dir + '/', { inplace: true }),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

describeTreeSafety('file', async () => {
  // The root is one level down, so that what lies "outside the destination" is still ours to clean.
  const dir = await mkdtemp(join(tmpdir(), 'ferry-file-'));
  const root = join(dir, 'root') + '/';
  await mkdir(root);
  return {
    store: new FileStore(root),
    root,
    openInplace: async () => new FileStore(root, { inplace: true }),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});
