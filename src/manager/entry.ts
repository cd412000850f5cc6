import { writeFileSync } from 'node:fs';
import { redactAddress } from '../shared/storage/address.js';
import { main } from './cli.js';

// Addresses may carry secret keys: hide them from `ps` and /proc/PID/cmdline at once (the process
// title overwrites the argument area), as juicefs does.
process.title = ['ferry', ...process.argv.slice(2).map(redactAddress)].join(' ');
// The title also became the thread's name (/proc/PID/stat's comm), spaces and all: tools that parse
// that file word by word — Slurm's proctrack/linuxproc, which signals a job's processes — then skip
// this process, so `scancel` and time limits would not stop it. A plain name keeps them working.
if (process.platform === 'linux') {
  try {
    writeFileSync('/proc/self/comm', 'ferry');
  } catch {
    // not fatal: only the name tools see
  }
}

const code = await main(process.argv.slice(2));
// Let stdout drain, then leave even if an SDK keeps idle sockets open.
process.stdout.write('', () => process.exit(code));
