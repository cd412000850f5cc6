// The benchmark's S3 server: the tests' s3rver (with its order and signature fixes) on 127.0.0.1,
// buckets made up front. Prints {"port": N} and runs until its standard input closes.
import { startS3Server } from '../test/support/s3-server.js';

const buckets = process.argv.slice(2);
const server = await startS3Server();
for (const b of buckets) await server.createBucket(b);
process.stdout.write(JSON.stringify({ port: server.port }) + '\n');
process.stdin.resume();
process.stdin.on('end', () => void server.close().then(() => process.exit(0)));
