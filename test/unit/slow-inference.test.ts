import { describe, expect, it } from 'vitest';
import { parseEvalTiming } from '../../src/run/llama-server.js';
import { slowInferenceWatch } from '../../src/run/embedded-llm.js';

const line = (tokens: number, tps: string): string =>
  `0.00.255.537 I slot print_timing: id  3 | task 2 |        eval time =       8.38 ms /    ${tokens} tokens (    0.36 ms per token,  ${tps} tokens per second)`;

describe('parseEvalTiming', () => {
  it('reads the generation timing llama-server logs after a completion', () => {
    expect(parseEvalTiming(line(24, '2745.29'))).toEqual({ tokens: 24, tokensPerSecond: 2745.29 });
    expect(parseEvalTiming(line(1, 'inf'))).toEqual({ tokens: 1, tokensPerSecond: Infinity });
  });

  it('ignores prompt processing and every other line', () => {
    expect(
      parseEvalTiming(
        'slot print_timing: id  3 | task 2 | prompt eval time =       4.25 ms /    11 tokens (    0.39 ms per token,  2589.45 tokens per second)',
      ),
    ).toBeNull();
    expect(parseEvalTiming('srv  llama_server: model loaded')).toBeNull();
  });
});

describe('slowInferenceWatch', () => {
  it('passes every line on and reports slow generation at most every five minutes', () => {
    const passed: string[] = [];
    const slow: number[] = [];
    let clock = 0;
    const sink = slowInferenceWatch(
      (_role, l) => passed.push(l),
      5,
      (t) => slow.push(t.tokensPerSecond),
      () => clock,
    );
    sink('llm', line(24, '3.10'));
    sink('llm', line(24, '2.00')); // within five minutes of the first report
    sink('llm', line(24, '50.0')); // fast
    sink('llm', line(2, '0.50')); // too short to judge
    clock += 5 * 60_000;
    sink('llm', line(24, '4.99'));
    expect(slow).toEqual([3.1, 4.99]);
    expect(passed).toHaveLength(5);
  });

  it('is off at 0', () => {
    const slow: unknown[] = [];
    const sink = slowInferenceWatch(
      () => undefined,
      0,
      (t) => slow.push(t),
    );
    sink('llm', line(24, '0.01'));
    expect(slow).toEqual([]);
  });
});
