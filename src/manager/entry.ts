import { main } from './cli.js';

const code = await main(process.argv.slice(2));
// Let stdout drain, then leave even if an SDK keeps idle sockets open.
process.stdout.write('', () => process.exit(code));
