import { NotSupportedYetError, UsageError } from '../../shared/errors.js';

// Apart from dump.ts, so that the command line can tell a dump's format without loading the writer.

export type DumpFormat = 'json' | 'json.gz' | 'tar' | 'tar.gz' | 'zip';

/**
 * The format a dump is written in: `override` (--format) when given, else by OUT's name. Names
 * without a known ending are refused: a dump's format must not depend on a guess.
 */
export function formatOf(name: string, override?: string): DumpFormat {
  const supported = `supported: .json, .json.gz, .tar, .tar.gz (.tgz) and .zip`;
  const pick = (what: string, from: string): DumpFormat | undefined => {
    const n = what.toLowerCase();
    if (n === 'json' || n.endsWith('.json')) return 'json';
    if (n === 'json.gz' || n.endsWith('.json.gz')) return 'json.gz';
    if (n === 'tar' || n.endsWith('.tar')) return 'tar';
    if (n === 'tar.gz' || n === 'tgz' || n.endsWith('.tar.gz') || n.endsWith('.tgz')) return 'tar.gz';
    if (n === 'zip' || n.endsWith('.zip')) return 'zip';
    for (const later of ['tar.bz2', 'tbz2', 'tbz', 'tar.xz', 'txz', 'tar.zst', 'tzst']) {
      if (n === later || n.endsWith('.' + later)) {
        throw new NotSupportedYetError(`${from} ${JSON.stringify(what)}: .${later} archives are not supported yet in this version of ferry (no well-kept library for Node); ${supported}`);
      }
    }
    return undefined;
  };
  if (override !== undefined) {
    const f = pick(override, '--format');
    if (!f) throw new UsageError(`--format ${JSON.stringify(override)} is not a dump format; ${supported}`);
    return f;
  }
  if (name === '' || name === '-') return 'json';
  const f = pick(name, 'the output');
  if (!f) throw new UsageError(`cannot tell the dump format from the name ${JSON.stringify(name)}; name it .json, .json.gz, .tar, .tar.gz, .tgz or .zip, or give --format`);
  return f;
}
