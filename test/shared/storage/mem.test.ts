import { MemStore } from '../../../src/shared/storage/mem.js';
import { withPrefix } from '../../../src/shared/storage/prefixed.js';
import { describeConformance } from './conformance.js';

describeConformance('mem', async () => {
  const store = new MemStore('conformance');
  return { store, pendingUploads: async () => store.openUploads };
});

// The prefix view every address with a path goes through: every call, multipart included, maps its keys.
describeConformance('mem under a prefix', async () => {
  const store = new MemStore('conformance-prefixed');
  return { store: withPrefix(store, 'view/'), pendingUploads: async () => store.openUploads, bigObjectBytes: 16 * 1024 * 1024 };
});
