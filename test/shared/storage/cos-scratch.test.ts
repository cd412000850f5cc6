import { it } from 'vitest';
import { parseAddress } from '../../../src/shared/storage/address.js';
import { openCosStore } from '../../../src/shared/storage/cos/index.js';
import { CosServer } from '../../support/cos-server.js';

it('timing', async () => {
  const server = await CosServer.start({ credentials: [{ secretId: 'AK', secretKey: 'SK' }], buckets: ['b-1'] });
  let conns = 0;
  (server as any); 
  const s = openCosStore(parseAddress('cos://AK:SK@b-1.cos.ap-beijing.myqcloud.com'), { noHttps: true }, { connectTo: server.ip });
  for (const op of ['put', 'head', 'list'] as const) {
    const t = performance.now();
    for (let i = 0; i < 50; i++) {
      if (op === 'put') await s.put(`k${i}`, Buffer.from('x'));
      else if (op === 'head') await s.head(`k${i}`);
      else for await (const _ of s.list({ prefix: `k${i}` })) {}
    }
    console.log(op, ((performance.now() - t) / 50).toFixed(2), 'ms per call');
  }
  const t = performance.now();
  await Promise.all(Array.from({ length: 200 }, (_, i) => s.put(`p${i}`, Buffer.from('x'))));
  console.log('200 parallel puts', (performance.now() - t).toFixed(0), 'ms');
  await s.close(); await server.close();
});
