import type { MemStore } from '../src/shared/storage/mem.js';

/**
 * Fill `store` with `n` keys `dirNNNNN/file-NNNNNN.dat` (1,000 to a directory), each holding
 * `body`. The keys are made in one reused buffer: a concatenation would keep rope nodes per key,
 * and a buffer per key would leave garbage that inflates the peak RSS the benchmarks report.
 */
export function fillStore(store: MemStore, n: number, body: Buffer, attrs: { mtime: number; mode?: number }): MemStore {
  const template = Buffer.from('dir00000/file-000000.dat', 'latin1');
  const digits = (at: number, width: number, v: number) => {
    for (let k = at + width - 1; k >= at; k--, v = Math.floor(v / 10)) template[k] = 48 + (v % 10);
  };
  for (let i = 0; i < n; i++) {
    digits(3, 5, Math.floor(i / 1000));
    digits(14, 6, i % 1000);
    store.set(template.toString('latin1'), body, attrs);
  }
  return store;
}
