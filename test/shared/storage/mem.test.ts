import { MemStore } from '../../../src/shared/storage/mem.js';
import { describeConformance } from './conformance.js';

describeConformance('mem', async () => ({ store: new MemStore('conformance') }));
