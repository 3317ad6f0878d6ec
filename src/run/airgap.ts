/**
 * The air gap as `run` can honestly keep it (AIRGAP). What it checks: the URLs it is given
 * (LLM_ENDPOINT, APP_HEALTH_URL) must lead to loopback or to an allow-listed host. What it gives the
 * children: proxy variables that point at a closed loopback port, so clients that honour them fail
 * instead of reaching out. That stops well-behaved clients only; raw sockets, DNS and clients that
 * ignore the variables are stopped by the network alone (no route out: src/run/egress.ts says
 * whether there is one, and the reference shows the kernel and cluster rules that make it so).
 *
 * AIRGAP_ALLOWLIST entries, as NO_PROXY matches them (curl, Python's urllib, Go, undici): a name
 * allows itself and every subdomain (`example.com` and `.example.com` alike); an address or address
 * block (`10.0.0.5`, `10.0.0.0/24`, `fd00::/64`) allows the addresses in it. Ports are not part of an
 * entry: a proxy variable cannot say them.
 */
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { CodiError } from '../errors.js';
import { redactUrl } from '../redact.js';
import { settingError as usage } from './settings.js';

/**
 * Where `HTTP_PROXY` points under AIRGAP: the discard port on loopback, where nothing listens in practice,
 * so a proxy-honouring client fails at once with "connection refused" instead of reaching out. It is a
 * guard against accidents, not a firewall: inside a container whose unprivileged ports start at 0
 * (Docker's default since 20.10) a process of the container could listen there.
 */
export const AIRGAP_PROXY = 'http://127.0.0.1:9';
export const LOOPBACK_NO_PROXY = ['localhost', '127.0.0.1', '::1'];

/** An address block: the first `prefix` bits of `bytes`. */
export interface AddressBlock {
  family: 4 | 6;
  bytes: Uint8Array;
  prefix: number;
}

export type AllowEntry =
  { kind: 'name'; name: string; text: string } | { kind: 'block'; block: AddressBlock; text: string };

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/u;

/** One AIRGAP_ALLOWLIST entry read and checked; refusals are usage errors (exit 2) naming it. */
export function parseAllowEntry(raw: string, setting = 'AIRGAP_ALLOWLIST'): AllowEntry {
  const text = raw.trim().toLowerCase();
  const refuse = (why: string, hint: string): CodiError =>
    usage(`${setting} entry ${JSON.stringify(raw)} ${why}`, hint, setting);
  const bare = text.replace(/^\[(.*)\]$/u, '$1');
  const slash = bare.indexOf('/');
  const address = slash < 0 ? bare : bare.slice(0, slash);
  const family = isIP(address);
  if (family === 4 || family === 6) {
    const max = family === 4 ? 32 : 128;
    const prefixText = slash < 0 ? String(max) : bare.slice(slash + 1);
    const prefix = /^[0-9]{1,3}$/u.test(prefixText) ? Number(prefixText) : NaN;
    if (!(prefix >= 0 && prefix <= max)) {
      throw refuse(
        `has no valid prefix length (0 to ${max})`,
        `e.g. ${family === 4 ? '10.0.0.0/24' : 'fd00::/64'}`,
      );
    }
    return { kind: 'block', block: { family, bytes: addressBytes(address), prefix }, text: bare };
  }
  if (/^\[.*\]:[0-9]+$/u.test(text) || /^[^:]+:[0-9]*$/u.test(text)) {
    throw refuse(
      'names a port: entries are hosts, without a port',
      `write ${JSON.stringify(text.replace(/:[0-9]*$/u, '').replace(/^\[(.*)\]$/u, '$1'))}: NO_PROXY cannot say a port either, so every port of an allowed host is allowed`,
    );
  }
  // a trailing dot (an absolute name) is the same name; a leading one means the same as none
  const name = text.replace(/\.$/u, '').replace(/^\./u, '');
  if (
    text === '*' ||
    name === '' ||
    text.startsWith('..') ||
    name.length > 253 ||
    !name.split('.').every((l) => LABEL.test(l))
  ) {
    throw refuse(
      'is not a host name, an address or an address block',
      `e.g. ${setting}=llm.internal.example.com,10.0.0.5,10.0.0.0/24 (a name allows its subdomains)`,
    );
  }
  return { kind: 'name', name, text: name };
}

/** `text` of a comma-separated list: the entries, each checked (empty items are ignored). */
export function parseAllowlist(text: string, setting = 'AIRGAP_ALLOWLIST'): AllowEntry[] {
  return text
    .split(',')
    .map((h) => h.trim())
    .filter((h) => h !== '')
    .map((h) => parseAllowEntry(h, setting));
}

function addressBytes(address: string): Uint8Array {
  if (isIP(address) === 4) return Uint8Array.from(address.split('.').map(Number));
  // IPv6: expand `::`, and an embedded IPv4 tail (::ffff:1.2.3.4)
  let text = address;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/u.exec(text);
  if (v4?.[1]) {
    const b = v4[1].split('.').map(Number);
    text = `${text.slice(0, -v4[1].length)}${(((b[0] ?? 0) << 8) | (b[1] ?? 0)).toString(16)}:${(((b[2] ?? 0) << 8) | (b[3] ?? 0)).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups =
    tail === undefined
      ? left
      : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  const bytes = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    bytes[i * 2] = v >> 8;
    bytes[i * 2 + 1] = v & 0xff;
  });
  return bytes;
}

/** The block an address (IPv4, IPv6) is, as a /32 or /128. */
export function addressBlock(address: string): AddressBlock | null {
  const family = isIP(address);
  if (family !== 4 && family !== 6) return null;
  return { family, bytes: addressBytes(address), prefix: family === 4 ? 32 : 128 };
}

/** Whether every address of `inner` lies in `outer`. */
export function blockContains(outer: AddressBlock, inner: AddressBlock): boolean {
  if (outer.family !== inner.family || inner.prefix < outer.prefix) return false;
  for (let bit = 0; bit < outer.prefix; bit++) {
    const mask = 0x80 >> (bit % 8);
    const i = bit >> 3;
    if (((outer.bytes[i] ?? 0) & mask) !== ((inner.bytes[i] ?? 0) & mask)) return false;
  }
  return true;
}

/** The host of a URL as it is compared: lower case, no brackets, no trailing dot. */
export function normalHost(hostname: string): string {
  return hostname
    .toLowerCase()
    .replace(/^\[|\]$/gu, '')
    .replace(/\.$/u, '');
}

/** Whether `hostname` (a name or an address) is allowed by one of `entries`. */
export function isAllowListed(hostname: string, entries: readonly AllowEntry[]): boolean {
  const host = normalHost(hostname);
  const block = addressBlock(host);
  return entries.some((e) => {
    if (e.kind === 'block') return block !== null && blockContains(e.block, block);
    return block === null && (host === e.name || host.endsWith(`.${e.name}`));
  });
}

/** 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104: addresses that never leave the machine. */
export function isLoopbackAddress(address: string): boolean {
  const block = addressBlock(normalHost(address));
  if (block === null) return false;
  if (block.family === 4) return block.bytes[0] === 127;
  const v4mapped =
    block.bytes.subarray(0, 10).every((b) => b === 0) && block.bytes[10] === 0xff && block.bytes[11] === 0xff;
  if (v4mapped) return block.bytes[12] === 127;
  return block.bytes.subarray(0, 15).every((b) => b === 0) && block.bytes[15] === 1;
}

/** How a host name resolves: every address, as the system resolver (getaddrinfo, /etc/hosts) gives them. */
export type Resolver = (host: string) => Promise<string[]>;

const systemResolver: Resolver = async (host) =>
  (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);

/**
 * Whether `hostname` only ever reaches this machine: a loopback address, or `localhost` / a
 * `*.localhost` name that resolves to loopback addresses only (such names go to the system resolver,
 * where /etc/hosts may send `evil.localhost` anywhere). Resolves to the reason when it does not.
 */
export async function loopbackProblem(
  hostname: string,
  resolve: Resolver = systemResolver,
): Promise<string | null> {
  const host = normalHost(hostname);
  if (isIP(host)) return isLoopbackAddress(host) ? null : `${host} is not a loopback address`;
  if (host !== 'localhost' && !host.endsWith('.localhost')) return `${host} is not loopback`;
  let addresses: string[];
  try {
    addresses = await resolve(host);
  } catch (e) {
    return `${host} does not resolve (${(e as NodeJS.ErrnoException).code ?? String(e)})`;
  }
  const outside = addresses.filter((a) => !isLoopbackAddress(a));
  if (addresses.length === 0) return `${host} does not resolve`;
  return outside.length === 0 ? null : `${host} resolves to ${outside.join(', ')}, which is not loopback`;
}

/** The URLs the air gap holds to its rule: the setting's name and the URL, where one is set. */
export interface GuardedUrl {
  setting: 'LLM_ENDPOINT' | 'APP_HEALTH_URL';
  url: string;
}

/**
 * Under AIRGAP every guarded URL must lead to loopback or an allow-listed host: AIRGAP_BLOCKED,
 * exit 3, naming the setting, the host and the fix.
 */
export async function checkUrlsAllowed(
  urls: readonly GuardedUrl[],
  allowlist: readonly AllowEntry[],
  resolve: Resolver = systemResolver,
): Promise<void> {
  for (const { setting, url } of urls) {
    const host = normalHost(new URL(url).hostname);
    if (isAllowListed(host, allowlist)) continue;
    const problem = await loopbackProblem(host, resolve);
    if (problem === null) continue;
    const shown = redactUrl(url);
    throw new CodiError(
      'AIRGAP_BLOCKED',
      `${setting} ${shown} is not allowed under AIRGAP: ${problem}, and ${host} is not in AIRGAP_ALLOWLIST`,
      {
        hint: `add ${host} to AIRGAP_ALLOWLIST (comma-separated), or point ${setting} at an allowed host`,
        details: { setting, url: shown, host, AIRGAP_ALLOWLIST: allowlist.map((e) => e.text) },
      },
    );
  }
}

/**
 * The proxy guard for the children: clients that honour the proxy variables (requests, httpx,
 * urllib, curl, undici's EnvHttpProxyAgent) get "connection refused" for anything not in NO_PROXY.
 * NO_PROXY lists loopback and the allowlist as the clients read it (a name with its subdomains, an
 * address block in CIDR form, which curl ≥ 7.86, requests and Go understand).
 */
export function proxyEnv(allowlist: readonly AllowEntry[]): Record<string, string> {
  const noProxy = [...LOOPBACK_NO_PROXY, ...allowlist.map((e) => e.text)].join(',');
  return {
    HTTP_PROXY: AIRGAP_PROXY,
    HTTPS_PROXY: AIRGAP_PROXY,
    http_proxy: AIRGAP_PROXY,
    https_proxy: AIRGAP_PROXY,
    ALL_PROXY: AIRGAP_PROXY,
    all_proxy: AIRGAP_PROXY,
    NO_PROXY: noProxy,
    no_proxy: noProxy,
  };
}
