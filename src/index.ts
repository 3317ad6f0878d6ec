export { CodiError, ExitCode } from './errors.js';
export type { Finding, FindingLevel } from './findings.js';
