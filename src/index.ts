// The library behind the CLI: every command is one of these functions (see docs/ARCHITECTURE.md).
export { CodiError, ExitCode } from './errors.js';
export type { Finding, FindingLevel } from './findings.js';
export { verifyAdapter, inspectAdapter } from './verify.js';
export type { VerifyReport, VerifyOptions, VerifiedAdapter, Inspection } from './verify.js';
export { convertAdapter, OUTTYPES } from './convert.js';
export type { ConvertOptions, ConvertResult, OutType } from './convert.js';
export { mountAdapter } from './catalog/mount.js';
export type { MountOptions, MountResult } from './catalog/mount.js';
export { listAdapters } from './catalog/list.js';
export type { CatalogListing, CatalogEntry } from './catalog/list.js';
export type { AdapterStatus } from './catalog/volume.js';
export { promoteAdapter } from './promote.js';
export type { PromoteOptions, PromoteResult } from './promote.js';
export { resolveRunConfig, RUN_SETTINGS, SETTING_NAMES } from './run-config.js';
export type { RunConfig, RunFlags, SettingName, LlmMode, AppCommand } from './run-config.js';
export { runServices, ENVIRONMENT_FILE } from './run/services.js';
export type { RunEvent, RunOptions, RunResult, RunOutcome, EnvironmentRecord } from './run/services.js';
