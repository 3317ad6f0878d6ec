/**
 * Whether this process can reach beyond loopback, told from the routing tables (Linux /proc): a
 * default route, or any route through an interface other than `lo`, IPv4 and IPv6. A route whose
 * whole block is allow-listed (AIRGAP_ALLOWLIST holds the internal network's block) leads only where
 * the operator allows; so does a link-local route on an interface where every other route is allowed
 * (it reaches the same link). Anything else means egress is possible: `airgap.enforced` is false.
 *
 * What this cannot see: firewall rules (nftables, iptables) and a Kubernetes NetworkPolicy, which
 * stop traffic that has a route. Under such a rule `enforced` still reads false, honestly: `run`
 * cannot prove the rule is there. Only the main IPv4 routing table is read (/proc/net/route); routes
 * of other tables chosen by `ip rule` are not seen.
 */
import { readFileSync } from 'node:fs';
import { blockContains, type AddressBlock, type AllowEntry } from './airgap.js';

export interface Route {
  family: 4 | 6;
  /** `10.0.0.0/24`, `::/0` */
  destination: string;
  block: AddressBlock;
  /** the next hop, when the route goes through a gateway */
  gateway: string | null;
  iface: string;
}

export interface Egress {
  /** routes that lead beyond loopback and beyond the allowlist */
  outside: Route[];
  /** every route beyond loopback (allowed or not) */
  routes: Route[];
  defaultRoute: boolean;
  /** false when the routing tables could not be read (not Linux) */
  known: boolean;
}

const RTF_UP = 0x0001;
const RTF_GATEWAY = 0x0002;
const RTF_REJECT = 0x0200;
/** IPv6 routes of the process's own addresses (the local table) */
const RTF_LOCAL = 0x80000000;

function hexBytes(hex: string, reverse: boolean): Uint8Array {
  const bytes = Uint8Array.from(hex.match(/../gu) ?? [], (h) => parseInt(h, 16));
  return reverse ? bytes.reverse() : bytes;
}

function ipText(bytes: Uint8Array): string {
  if (bytes.length === 4) return [...bytes].join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  // the URL parser writes an IPv6 address in its canonical short form (RFC 5952)
  return new URL(`http://[${groups.join(':')}]/`).hostname.replace(/^\[|\]$/gu, '');
}

function prefixOf(mask: Uint8Array): number {
  let bits = 0;
  for (const b of mask) bits += b.toString(2).replace(/0/gu, '').length;
  return bits;
}

/** IPv4 routes of the main table (/proc/net/route: little-endian hex addresses). */
export function parseIpv4Routes(text: string): Route[] {
  const routes: Route[] = [];
  for (const line of text.split('\n').slice(1)) {
    const [iface, dest, gw, flagsHex, , , , maskHex] = line.trim().split(/\s+/u);
    if (!iface || !dest || !gw || !flagsHex || !maskHex) continue;
    const flags = parseInt(flagsHex, 16);
    if (!(flags & RTF_UP) || flags & RTF_REJECT || iface === 'lo') continue;
    const bytes = hexBytes(dest, true);
    const prefix = prefixOf(hexBytes(maskHex, true));
    routes.push({
      family: 4,
      destination: `${ipText(bytes)}/${prefix}`,
      block: { family: 4, bytes, prefix },
      gateway: flags & RTF_GATEWAY ? ipText(hexBytes(gw, true)) : null,
      iface,
    });
  }
  return routes;
}

/** IPv6 routes of every table (/proc/net/ipv6_route), without the local and multicast ones. */
export function parseIpv6Routes(text: string): Route[] {
  const routes: Route[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/u);
    const [dest, prefixHex, , , gw, , , , flagsHex, iface] = f;
    if (!dest || !prefixHex || !gw || !flagsHex || !iface) continue;
    const flags = parseInt(flagsHex, 16);
    if (!(flags & RTF_UP) || flags & RTF_REJECT || flags & RTF_LOCAL || iface === 'lo') continue;
    const bytes = hexBytes(dest, false);
    if (bytes[0] === 0xff) continue;
    const prefix = parseInt(prefixHex, 16);
    routes.push({
      family: 6,
      destination: `${ipText(bytes)}/${prefix}`,
      block: { family: 6, bytes, prefix },
      gateway: /^0+$/u.test(gw) ? null : ipText(hexBytes(gw, false)),
      iface,
    });
  }
  return routes;
}

function readOr(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

/** The routes beyond loopback, from /proc (`root` for tests); null when they cannot be read. */
export function readRoutes(root = '/proc'): Route[] | null {
  const v4 = readOr(`${root}/net/route`);
  const v6 = readOr(`${root}/net/ipv6_route`);
  if (v4 === null && v6 === null) return null;
  return [...(v4 === null ? [] : parseIpv4Routes(v4)), ...(v6 === null ? [] : parseIpv6Routes(v6))];
}

const LINK_LOCAL: readonly AddressBlock[] = [
  { family: 4, bytes: Uint8Array.from([169, 254, 0, 0]), prefix: 16 },
  { family: 6, bytes: Uint8Array.from([0xfe, 0x80, ...Array<number>(14).fill(0)]), prefix: 10 },
];

/** What the routes allow out, given the allowlist's address blocks. */
export function egressOf(routes: readonly Route[], allowlist: readonly AllowEntry[]): Egress {
  const blocks = allowlist.flatMap((e) => (e.kind === 'block' ? [e.block] : []));
  const allowed = (r: Route): boolean => blocks.some((b) => blockContains(b, r.block));
  const linkLocal = (r: Route): boolean => LINK_LOCAL.some((b) => blockContains(b, r.block));
  // a link-local route reaches the link only: allowed where every other route of its interface is
  const ifaceAllowed = (iface: string): boolean => {
    const others = routes.filter((r) => r.iface === iface && !linkLocal(r));
    return others.length > 0 && others.every(allowed);
  };
  const outside = routes.filter((r) => !allowed(r) && !(linkLocal(r) && ifaceAllowed(r.iface)));
  return {
    outside,
    routes: [...routes],
    defaultRoute: routes.some((r) => r.block.prefix === 0),
    known: true,
  };
}

/** This process's egress, from /proc. */
export function detectEgress(allowlist: readonly AllowEntry[], root = '/proc'): Egress {
  const routes = readRoutes(root);
  if (routes === null) return { outside: [], routes: [], defaultRoute: false, known: false };
  return egressOf(routes, allowlist);
}

/** `10.0.0.0/24 dev eth0`, `0.0.0.0/0 via 10.0.0.1 dev eth0`, as `ip route` shows them. */
export function routeText(r: Route): string {
  return `${r.destination}${r.gateway ? ` via ${r.gateway}` : ''} dev ${r.iface}`;
}
