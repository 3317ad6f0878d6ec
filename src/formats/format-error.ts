/**
 * What a format refuses, and nothing more: the code, the reason, and where in the bytes (a byte
 * offset, or a JSON pointer). No exit status and no hint: they depend on the file and the command, so
 * the layer above the formats attaches them (`asCodiError` in errors.ts, from the code's row).
 */
import type { Code } from '../codes.js';

export interface FormatErrorOptions {
  /** a byte offset (or `<entry>:<offset>` inside an archive) or a JSON pointer */
  pointer?: string;
  /** machine-readable detail (offsets, keys, tensor names) */
  details?: Record<string, unknown>;
  cause?: unknown;
}

export class FormatError extends Error {
  readonly code: Code;
  readonly pointer: string | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: Code, message: string, options: FormatErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FormatError';
    this.code = code;
    this.pointer = options.pointer;
    this.details = options.details;
  }
}

export function isFormatError(value: unknown): value is FormatError {
  return value instanceof FormatError;
}
