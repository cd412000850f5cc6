import { describe, expect, it } from 'vitest';
import { AbortedError, ChecksumMismatchError, FatalError, FerryError, fromWire, NotFoundError, RemoteError, toWire, TransientError } from '../../src/shared/errors.js';

describe('ferry errors', () => {
  it('instanceof holds across two copies of the module (two bundles in one process)', async () => {
    // A backend chunk or a worker bundle has its own copy of the classes: prototype checks would fail.
    const copy = '../../src/shared/errors.js?second-copy';
    const other = (await import(/* @vite-ignore */ copy)) as typeof import('../../src/shared/errors.js');
    expect(other.NotFoundError).not.toBe(NotFoundError);
    const e = new other.NotFoundError('gone');
    expect(e instanceof NotFoundError).toBe(true);
    expect(e instanceof FerryError).toBe(true);
    expect(e instanceof TransientError).toBe(false);
    expect(new NotFoundError('x') instanceof other.FerryError).toBe(true);
    expect(new Error('plain') instanceof FerryError).toBe(false);
  });

  it('cross a process boundary in a wire form that keeps code, class and retry class', () => {
    for (const e of [new NotFoundError('a'), new TransientError('b'), new ChecksumMismatchError('c'), new AbortedError(), new FatalError('d')]) {
      const back = fromWire(structuredClone(toWire(e)));
      expect(back.constructor).toBe(e.constructor);
      expect(back).toMatchObject({ code: e.code, retry: e.retry, message: e.message });
    }
    const sys = fromWire(toWire(Object.assign(new Error('reset'), { code: 'ECONNRESET' })));
    expect(sys).toBeInstanceOf(RemoteError);
    expect(sys).toMatchObject({ code: 'ECONNRESET', retry: 'transient' });
    const unknown = fromWire({ code: 'FERRY_FROM_THE_FUTURE', retry: 'throttled', message: 'm' });
    expect(unknown).toMatchObject({ code: 'FERRY_FROM_THE_FUTURE', retry: 'throttled' });
  });
});
