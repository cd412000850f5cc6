import { execFileSync } from 'node:child_process';

/** Tests that run bin/ferry.js need dist/ built from the current sources. */
export default function setup(): void {
  execFileSync(process.execPath, ['scripts/build.mjs'], { stdio: 'inherit' });
}
