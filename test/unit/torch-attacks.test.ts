/**
 * One hostile file per known class of attack (src/testkit/torch-attacks.ts says what torch did with
 * each): the scanner refuses it with its code, or reads exactly the tensors torch loads. Never a
 * throw of anything but a format error.
 */
import { describe, expect, it } from 'vitest';
import { FormatError } from '../../src/formats/format-error.js';
import { scanTorchBinBytes } from '../../src/formats/torch-bin.js';
import { torchAttacks } from '../../src/testkit/torch-attacks.js';

describe('hostile .bin files', () => {
  const attacks = torchAttacks();

  it('have distinct ids', () => {
    expect(new Set(attacks.map((a) => a.id)).size).toBe(attacks.length);
  });

  for (const attack of attacks) {
    const { expect: want } = attack;
    it(`${attack.id}: ${attack.title} → ${'code' in want ? want.code : 'read as torch reads it'}`, async () => {
      const outcome = await scanTorchBinBytes(attack.bytes).then(
        (scan) => ({ scan }),
        (err: unknown) => ({ err }),
      );
      if ('code' in want) {
        if (!('err' in outcome)) throw new Error(`${attack.id} passed the scan`);
        expect(outcome.err).toBeInstanceOf(FormatError);
        expect((outcome.err as FormatError).code).toBe(want.code);
      } else {
        if ('err' in outcome) throw outcome.err;
        expect(Object.fromEntries(outcome.scan.tensors.map((t) => [t.name, t.shape]))).toEqual(want.shapes);
      }
    });
  }
});
