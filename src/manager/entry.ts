import { redactAddress } from '../shared/storage/address.js';
import { main } from './cli.js';

// Addresses may carry secret keys: hide them from `ps` and /proc/PID/cmdline at once (the process
// title overwrites the argument area), as juicefs does.
process.title = ['ferry', ...process.argv.slice(2).map(redactAddress)].join(' ');

const code = await main(process.argv.slice(2));
// Let stdout drain, then leave even if an SDK keeps idle sockets open.
process.stdout.write('', () => process.exit(code));
