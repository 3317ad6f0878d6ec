/**
 * Milliseconds since the process started, from a monotonic clock. `performance.now()` says the same,
 * but the first use of the `performance` global loads several of Node's modules (time and fresh
 * memory in a command that lasts a fraction of a second); `process.uptime()` reads the clock directly.
 */
export function nowMs(): number {
  return process.uptime() * 1000;
}
