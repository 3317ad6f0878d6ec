/**
 * Terminal colours, through one small facade. chalk is slow to load (it probes the terminal
 * through node:tty and node:os), which output to a pipe or a file, or with colour turned off, never
 * needs: until `useColour(true)` has loaded chalk, every style returns its text as it is.
 */
export type Style = (text: string) => string;

export interface Palette {
  readonly red: Style;
  readonly green: Style;
  readonly yellow: Style;
  readonly dim: Style;
  readonly bold: Style;
}

const same: Style = (text) => text;
const PLAIN: Palette = { red: same, green: same, yellow: same, dim: same, bold: same };
let current: Palette = PLAIN;

/** The styles in use: plain until colour is turned on. */
export const paint: Palette = {
  red: (text) => current.red(text),
  green: (text) => current.green(text),
  yellow: (text) => current.yellow(text),
  dim: (text) => current.dim(text),
  bold: (text) => current.bold(text),
};

/**
 * Turns colour on or off. On, chalk still follows what the terminal supports: a dumb terminal, or a
 * CI job's log (`CI` set), stays plain.
 */
export async function useColour(on: boolean): Promise<void> {
  if (!on) {
    current = PLAIN;
    return;
  }
  const { default: chalk } = await import('chalk');
  current = {
    red: (text) => chalk.red(text),
    green: (text) => chalk.green(text),
    yellow: (text) => chalk.yellow(text),
    dim: (text) => chalk.dim(text),
    bold: (text) => chalk.bold(text),
  };
}
