/**
 * The air gap's rules: allowlist entries (names with their subdomains, addresses, blocks; no ports,
 * no "."), loopback (a *.localhost name must resolve to loopback only), and what the routing tables
 * say about egress. NO_PROXY is checked against curl, the reference for how clients read it.
 */
import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkUrlsAllowed,
  isAllowListed,
  isLoopbackAddress,
  loopbackProblem,
  parseAllowlist,
  proxyEnv,
  type Resolver,
} from '../../src/run/airgap.js';
import { egressOf, parseIpv4Routes, parseIpv6Routes, routeText } from '../../src/run/egress.js';
import { rejected, thrown } from '../helpers/errors.js';

const hosts =
  (table: Record<string, string[]>): Resolver =>
  (host) =>
    table[host]
      ? Promise.resolve(table[host])
      : Promise.reject(Object.assign(new Error('nope'), { code: 'ENOTFOUND' }));

describe('AIRGAP_ALLOWLIST entries', () => {
  it('reads names, addresses and address blocks; a leading or trailing dot changes nothing', () => {
    expect(
      parseAllowlist(' LLM.Example.com., .corp ,10.0.0.5, 10.1.0.0/16,[fd00::1],fd00:1::/64').map(
        (e) => e.text,
      ),
    ).toEqual(['llm.example.com', 'corp', '10.0.0.5', '10.1.0.0/16', 'fd00::1', 'fd00:1::/64']);
  });

  it.each([
    ['.', /is not a host name/u],
    ['..', /is not a host name/u],
    ['a..b', /is not a host name/u],
    ['*', /is not a host name/u],
    ['http://x/', /is not a host name/u],
    ['llm.example.com:8081', /names a port: entries are hosts, without a port/u],
    ['[::1]:8081', /names a port/u],
    ['10.0.0.5:80', /names a port/u],
    ['10.0.0.0/33', /no valid prefix length \(0 to 32\)/u],
    ['fd00::/129', /no valid prefix length \(0 to 128\)/u],
  ])('refuses %j (exit 2, naming the setting)', (entry, message) => {
    const err = thrown(() => parseAllowlist(`ok.example.com,${entry}`));
    expect(err.exitCode).toBe(2);
    expect(err.message).toMatch(/^AIRGAP_ALLOWLIST entry /u);
    expect(err.message).toMatch(message);
  });

  it('a name allows itself and its subdomains, never a name that merely ends the same', () => {
    const list = parseAllowlist('allowed.test,.corp.example');
    for (const h of [
      'allowed.test',
      'ALLOWED.test.',
      'evil.allowed.test',
      'a.b.allowed.test',
      'corp.example',
      'x.corp.example',
    ]) {
      expect(isAllowListed(h, list), h).toBe(true);
    }
    for (const h of ['evilallowed.test', 'allowed.test.evil', 'allowed.tes', 'example', '10.0.0.1']) {
      expect(isAllowListed(h, list), h).toBe(false);
    }
  });

  it('an address or block allows the addresses in it, IPv4 and IPv6', () => {
    const list = parseAllowlist('10.1.0.0/16,10.0.0.5,fd00:1::/64');
    for (const h of ['10.1.2.3', '10.0.0.5', '[fd00:1::7]', 'fd00:1:0:0:ffff::1'])
      expect(isAllowListed(h, list), h).toBe(true);
    for (const h of ['10.2.0.1', '10.0.0.6', 'fd00:2::1', '10.1.2.3.nip.io'])
      expect(isAllowListed(h, list), h).toBe(false);
  });
});

describe('loopback', () => {
  it('knows loopback addresses', () => {
    for (const a of ['127.0.0.1', '127.8.9.10', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) {
      expect(isLoopbackAddress(a), a).toBe(true);
    }
    for (const a of ['0.0.0.0', '10.0.0.1', '::', '128.0.0.1', '::ffff:10.0.0.1', 'localhost']) {
      expect(isLoopbackAddress(a), a).toBe(false);
    }
  });

  it('resolves localhost and *.localhost, and requires every address to be loopback', async () => {
    const resolve = hosts({
      localhost: ['127.0.0.1', '::1'],
      'app.localhost': ['127.0.0.5'],
      'evil.localhost': ['127.0.0.1', '203.0.113.7'],
    });
    expect(await loopbackProblem('localhost', resolve)).toBeNull();
    expect(await loopbackProblem('app.localhost', resolve)).toBeNull();
    expect(await loopbackProblem('evil.localhost', resolve)).toBe(
      'evil.localhost resolves to 203.0.113.7, which is not loopback',
    );
    expect(await loopbackProblem('gone.localhost', resolve)).toBe(
      'gone.localhost does not resolve (ENOTFOUND)',
    );
    expect(await loopbackProblem('localhost.example.com', resolve)).toBe(
      'localhost.example.com is not loopback',
    );
  });

  it('refuses LLM_ENDPOINT and APP_HEALTH_URL alike, with the credentials redacted from the message', async () => {
    const resolve = hosts({ 'evil.localhost': ['203.0.113.7'] });
    const err = await rejected(
      checkUrlsAllowed(
        [{ setting: 'LLM_ENDPOINT', url: 'http://user:hunter2@evil.localhost:8081' }],
        [],
        resolve,
      ),
    );
    expect(err.code).toBe('AIRGAP_BLOCKED');
    expect(err.exitCode).toBe(3);
    expect(err.message).toBe(
      'LLM_ENDPOINT http://***@evil.localhost:8081 is not allowed under AIRGAP: evil.localhost resolves to 203.0.113.7, which is not loopback, and evil.localhost is not in AIRGAP_ALLOWLIST',
    );
    expect(JSON.stringify(err.details)).not.toContain('hunter2');
    const health = await rejected(
      checkUrlsAllowed(
        [{ setting: 'APP_HEALTH_URL', url: 'http://10.9.9.9/healthz?token=abc' }],
        [],
        resolve,
      ),
    );
    expect(health.message).toMatch(
      /^APP_HEALTH_URL http:\/\/10\.9\.9\.9\/healthz\?token=\*\*\* is not allowed/u,
    );
    await checkUrlsAllowed(
      [{ setting: 'APP_HEALTH_URL', url: 'http://10.9.9.9/healthz' }],
      parseAllowlist('10.9.9.0/24'),
      resolve,
    );
  });
});

describe('NO_PROXY as a real client reads it (curl)', () => {
  let server: Server;
  let port = 0;
  beforeAll(async () => {
    server = createServer((_req, res) => res.end('direct'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => {
    server.close();
  });

  /** curl with the children's proxy variables: "direct" when NO_PROXY exempts `host`, else refused. */
  function viaCurl(host: string, allowlist: string): Promise<string> {
    return new Promise((resolve) => {
      execFile(
        'curl',
        ['-sS', '--max-time', '10', '--resolve', `${host}:${port}:127.0.0.1`, `http://${host}:${port}/`],
        { encoding: 'utf8', env: { PATH: process.env.PATH, ...proxyEnv(parseAllowlist(allowlist)) } },
        (err, stdout) => {
          resolve(err ? `refused (${String(err.code)})` : stdout);
        },
      );
    });
  }

  it('lets an allow-listed name and its subdomains through, and nothing else, as run judges them', async () => {
    const allow = 'allowed.test';
    const list = parseAllowlist(allow);
    for (const [host, through] of [
      ['allowed.test', true],
      ['evil.allowed.test', true],
      ['evilallowed.test', false],
      ['allowed.test.evil', false],
    ] as const) {
      // 7: could not connect (to the proxy on the closed port)
      expect(await viaCurl(host, allow), host).toBe(through ? 'direct' : 'refused (7)');
      // run's own check of LLM_ENDPOINT agrees with the client
      expect(isAllowListed(host, list), host).toBe(through);
    }
  });
});

describe('egress from the routing tables', () => {
  // `ip route` of a container on a bridge: default via 10.88.0.1, 10.88.0.0/16; IPv6 fd00::/64, fe80::/64, ::/0
  const v4 = `Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100580A\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0000580A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
`;
  const v6 = `fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000003 00000000 80200001       lo
fd000000000000000000000000000002 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000003 00000000 80200001     eth0
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
`;

  it('reads routes as ip route shows them, leaving out loopback, local, multicast and unreachable ones', () => {
    expect([...parseIpv4Routes(v4), ...parseIpv6Routes(v6)].map(routeText)).toEqual([
      '0.0.0.0/0 via 10.88.0.1 dev eth0',
      '10.88.0.0/16 dev eth0',
      'fd00::/64 dev eth0',
      'fe80::/64 dev eth0',
      '::/0 via fd00::1 dev eth0',
    ]);
  });

  it('a default route is egress; so is a route beyond the allowlist', () => {
    const routes = [...parseIpv4Routes(v4), ...parseIpv6Routes(v6)];
    const e = egressOf(routes, []);
    expect(e.defaultRoute).toBe(true);
    expect(e.outside).toHaveLength(5);
  });

  it('an internal network whose blocks are allow-listed is no egress, its link-local route included', () => {
    const routes = [
      ...parseIpv4Routes(v4).filter((r) => r.gateway === null),
      ...parseIpv6Routes(v6).filter((r) => r.gateway === null),
    ];
    // while an IPv6 block of the link is not allowed, its link-local route is not either
    expect(egressOf(routes, parseAllowlist('10.88.0.0/16')).outside.map(routeText)).toEqual([
      'fd00::/64 dev eth0',
      'fe80::/64 dev eth0',
    ]);
    const e = egressOf(routes, parseAllowlist('10.88.0.0/16,fd00::/64'));
    expect([e.outside, e.defaultRoute]).toEqual([[], false]);
  });

  it('no routes at all (network none): nothing gets out', () => {
    const none =
      '00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n';
    expect(
      egressOf([...parseIpv4Routes('Iface\tDestination\n'), ...parseIpv6Routes(none)], []).outside,
    ).toEqual([]);
  });
});
