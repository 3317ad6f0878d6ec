import { describe, expect, it } from 'vitest';
import { capFindings, countFindings, type Finding } from '../../src/findings.js';

const finding = (code: string, file: string, level: Finding['level'] = 'error'): Finding<string> => ({
  level,
  code,
  message: `${code} about ${file}`,
  file,
});

describe('capFindings', () => {
  it('keeps the first of each code and puts one finding for the rest right after them, in order', () => {
    const list = [
      finding('A', 'x'),
      finding('B', 'x', 'warning'),
      finding('A', 'x'),
      finding('A', 'x'),
      finding('B', 'y', 'warning'),
      finding('A', 'x'),
      finding('B', 'y', 'error'),
      finding('B', 'y', 'warning'),
      finding('C', 'z'),
    ];
    const capped = capFindings(list, 2);
    expect(capped.map((f) => [f.code, f.omitted ?? 0])).toEqual([
      ['A', 0],
      ['B', 0],
      ['A', 0],
      ['A', 2],
      ['B', 0],
      ['B', 1],
      ['B', 1],
      ['C', 0],
    ]);
    // the rest of A all about x; of B about y, an error and a warning
    expect(capped[3]).toEqual({
      level: 'error',
      code: 'A',
      message: '… and 2 more A findings (a report lists the first 2 of a code)',
      file: 'x',
      omitted: 2,
    });
    expect(capped[5]).toMatchObject({ level: 'error', file: 'y' });
    expect(capped[6]).toMatchObject({ level: 'warning', file: 'y' });
    expect(countFindings(capped)).toEqual(countFindings(list));
  });

  it('names the adapter folder when the rest are about several files, and merges capped lists', () => {
    const list = Array.from({ length: 5 }, (_, i) => finding('A', `f${i}`, 'warning'));
    const once = capFindings(list, 1);
    expect(once.at(-1)).toMatchObject({ level: 'warning', file: '.', omitted: 4 });
    const twice = capFindings([...once, ...capFindings(list, 1)], 1);
    expect(twice).toHaveLength(2);
    expect(twice[1]).toMatchObject({ omitted: 9, message: expect.stringContaining('9 more A') as string });
    expect(countFindings(twice)).toEqual({ errors: 0, warnings: 10 });
  });

  it('leaves a short list as it is', () => {
    const list = [finding('A', 'x'), finding('B', 'y', 'warning')];
    expect(capFindings(list)).toEqual(list);
  });
});
