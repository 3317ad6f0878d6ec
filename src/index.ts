// The library behind the CLI: every command is one of these functions (see docs/ARCHITECTURE.md).
export { CodiError, ExitCode } from './errors.js';
export type { Finding, FindingLevel } from './findings.js';
export { verifyAdapter, inspectAdapter } from './verify.js';
export type { VerifyReport, VerifyOptions, VerifiedAdapter, Inspection } from './verify.js';
export { convertAdapter, OUTTYPES } from './convert.js';
export type { ConvertOptions, ConvertResult, OutType } from './convert.js';
export { mountAdapter, listAdapters } from './catalog.js';
export type { MountOptions, MountResult, CatalogListing, CatalogEntry, AdapterStatus } from './catalog.js';
export { promoteAdapter } from './promote.js';
export type { PromoteOptions, PromoteResult } from './promote.js';
export { resolveRunConfig } from './run-config.js';
export type { RunConfig, RunFlags, LlmMode } from './run-config.js';
export { RUN_SETTINGS, SETTING_NAMES } from './run/settings.js';
export type { SettingName, AppCommand } from './run/settings.js';
export { runServices, ENVIRONMENT_FILE } from './run.js';
export type { RunEvent, RunOptions, RunResult, RunOutcome, EnvironmentRecord } from './run.js';
