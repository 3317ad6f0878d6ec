/**
 * The air gap as `run` reports it, through the built CLI, in network namespaces made to look like the
 * networks the enforcement examples give a container (docker/airgap/): `--network none` (loopback
 * only), an internal network (one interface, its block allow-listed, no default route), and a network
 * with a way out (a default route, IPv4 or IPv6 alone; a Kubernetes pod under a NetworkPolicy looks
 * like this from inside). `airgap.enforced` in environment.json, the warning and AIRGAP=strict.
 */
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { REPO } from '../helpers/cli.js';
import { processesLeft, startRun } from '../helpers/run-process.js';
import { tempDir } from '../helpers/tmp.js';

const APP = join(REPO, 'test/fixtures/run-app.js');
const COMPOSE = join(REPO, 'docker/airgap/compose.yaml');
const POLICY = join(REPO, 'docker/airgap/networkpolicy.yaml');

interface ComposeFile {
  services: Record<
    string,
    { environment: Record<string, string>; networks: Record<string, { ipv4_address: string }> }
  >;
  networks: Record<string, { internal?: boolean; ipam: { config: { subnet: string }[] } }>;
}

const namespaces: string[] = [];
let root: string;
let seq = 0;

/** `ip` in the namespace `ns` */
function ip(ns: string, ...args: string[]): void {
  execFileSync('ip', ['-n', ns, ...args], { stdio: 'pipe' });
}

/** A network namespace with loopback up, and `setup` run in it. */
function namespace(name: string, setup: (ns: string) => void = () => {}): string {
  const ns = `codi-t${process.pid}-${name}`;
  execFileSync('ip', ['netns', 'add', ns], { stdio: 'pipe' });
  namespaces.push(ns);
  ip(ns, 'link', 'set', 'lo', 'up');
  setup(ns);
  return ns;
}

/** An interface (eth0) with an IPv4 and maybe an IPv6 address, as a container's network attachment. */
function attach(ns: string, v4: string, v6?: string): void {
  // a veth pair whose far end is in a namespace of its own (the network's side): eth0 gets a carrier
  const far = namespace(`${ns.split('-').pop() ?? ''}-far`);
  ip(ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'far0', 'netns', far);
  ip(far, 'link', 'set', 'far0', 'up');
  ip(ns, 'addr', 'add', v4, 'dev', 'eth0');
  if (v6 !== undefined) ip(ns, '-6', 'addr', 'add', v6, 'dev', 'eth0', 'nodad');
  ip(ns, 'link', 'set', 'eth0', 'up');
}

const compose = parse(await readFile(COMPOSE, 'utf8')) as ComposeFile;
const codi = compose.services.codi;
const subnet = compose.networks.airgap?.ipam.config[0]?.subnet ?? '';
const address = codi?.networks.airgap?.ipv4_address ?? '';

let none: string;
let internal: string;
let routed4: string;
let routed6: string;

beforeAll(async () => {
  root = await tempDir('codi-run-airgap-');
  none = namespace('none');
  // IPv4 only, as the compose example's network: eth0 still has its IPv6 link-local route
  internal = namespace('int', (ns) => {
    attach(ns, `${address}/24`);
  });
  routed4 = namespace('r4', (ns) => {
    attach(ns, `${address}/24`, 'fd00:c0d1::20/64');
    ip(ns, 'route', 'add', 'default', 'via', '172.31.250.1');
  });
  routed6 = namespace('r6', (ns) => {
    attach(ns, `${address}/24`, 'fd00:c0d1::20/64');
    ip(ns, '-6', 'route', 'add', 'default', 'via', 'fd00:c0d1::1');
  });
});

// nothing a run started may outlive it (ps, as it were: /proc)
afterEach(async () => {
  expect(await processesLeft(root), 'processes left behind').toEqual([]);
});

afterAll(() => {
  for (const ns of namespaces) execFileSync('ip', ['netns', 'del', ns], { stdio: 'pipe' });
});

interface Airgap {
  enabled: boolean;
  mode: string;
  enforced: boolean | null;
  default_route: boolean;
  routes: string[];
  outside: string[];
}

/** `run` (no LLM, an app that records and exits 0) in the namespace `ns`, to its end. */
async function runIn(
  ns: string,
  env: Record<string, string>,
): Promise<{ code: number | null; out: string; err: string; airgap: Airgap | null }> {
  const state = join(root, `state-${++seq}`);
  const r = startRun(
    ['run'],
    {
      LLM_ENABLED: 'false',
      MODEL_MOUNT_PATH: root,
      CODI_STATE_DIR: state,
      PATTERNS_RULES: join(root, 'none.yml'),
      STOP_GRACE_PERIOD: '2',
      APP_COMMAND: `node ${APP} exit 0 ${join(root, `app-${seq}.json`)}`,
      ...env,
    },
    ['ip', 'netns', 'exec', ns],
  );
  const exit = await r.exited;
  const text = await readFile(join(state, 'environment.json'), 'utf8').catch(() => null);
  const airgap = text === null ? null : (JSON.parse(text) as { airgap: Airgap }).airgap;
  return { code: exit.code, out: r.stdout(), err: r.stderr(), airgap };
}

describe('the enforcement examples are what run checks for', () => {
  it('compose: the codi service is only on an internal network whose block is allow-listed, under AIRGAP=strict', () => {
    expect(compose.networks.airgap?.internal).toBe(true);
    expect(Object.keys(codi?.networks ?? {})).toEqual(['airgap']);
    expect(codi?.environment.AIRGAP).toBe('strict');
    expect(codi?.environment.AIRGAP_ALLOWLIST?.split(',')).toContain(subnet);
    const llm = compose.services.llm?.networks.airgap?.ipv4_address;
    expect(codi?.environment.LLM_ENDPOINT).toBe(`http://${llm}:8081`);
  });

  it('the NetworkPolicy denies all egress of the codi pods but to the LLM pods, on its port', async () => {
    const policy = parse(await readFile(POLICY, 'utf8')) as {
      kind: string;
      spec: {
        podSelector: { matchLabels: Record<string, string> };
        policyTypes: string[];
        egress: { to: Record<string, unknown>[]; ports: { protocol: string; port: number }[] }[];
      };
    };
    expect(policy.kind).toBe('NetworkPolicy');
    expect(policy.spec.podSelector.matchLabels).toEqual({ app: 'codi' });
    expect(policy.spec.policyTypes).toEqual(['Egress']);
    // one rule: a peer chosen by pod label (no ipBlock that could open the internet), one port
    expect(policy.spec.egress).toEqual([
      {
        to: [{ podSelector: { matchLabels: { app: 'codi-llm' } } }],
        ports: [{ protocol: 'TCP', port: 8081 }],
      },
    ]);
  });
});

describe('airgap.enforced, read from the routes IPv4 and IPv6', () => {
  it('docker run --network none (loopback only): enforced, and AIRGAP=strict starts', async () => {
    const r = await runIn(none, { AIRGAP: 'strict' });
    expect(r.code, r.err).toBe(0);
    expect(r.airgap).toMatchObject({
      mode: 'strict',
      enforced: true,
      default_route: false,
      routes: [],
      outside: [],
    });
    expect(`${r.out}${r.err}`).not.toMatch(/air gap not enforced/u);
  }, 60_000);

  it('the compose example’s internal network: enforced with its allowlist; without it, strict refuses (exit 3)', async () => {
    const allowed = await runIn(internal, { ...codi?.environment, LLM_ENABLED: 'false' });
    expect(allowed.code, allowed.err).toBe(0);
    expect(allowed.airgap?.enforced).toBe(true);
    expect(allowed.airgap?.routes).toContain(`${subnet} dev eth0`);
    // the link-local route reaches the same link as the allow-listed block
    expect(allowed.airgap?.routes).toContain('fe80::/64 dev eth0');
    expect(allowed.airgap?.outside).toEqual([]);

    const refused = await runIn(internal, { AIRGAP: 'strict' });
    expect(refused.code).toBe(3);
    expect(refused.err).toMatch(
      /AIRGAP_NOT_ENFORCED: AIRGAP=strict, and the network lets this process reach beyond loopback and the allowlist \(172\.31\.250\.0\/24 dev eth0/u,
    );
    expect(refused.err).toMatch(/hint: enforce the air gap in the network: docker run --network none/u);
    expect(refused.out).not.toMatch(/app started/u);
  }, 60_000);

  it.each([
    ['IPv4', () => routed4, '0.0.0.0/0 via 172.31.250.1 dev eth0'],
    ['IPv6', () => routed6, '::/0 via fd00:c0d1::1 dev eth0'],
  ])(
    'a default route (%s) alone: AIRGAP=true warns naming the fix and records enforced: false; strict exits 3',
    async (_family, ns, route) => {
      const allow = { AIRGAP_ALLOWLIST: `${subnet},fd00:c0d1::/64` };
      const warned = await runIn(ns(), { AIRGAP: 'true', ...allow });
      expect(warned.code, warned.err).toBe(0);
      expect(warned.airgap).toMatchObject({ enforced: false, default_route: true });
      // the default route, and the link-local block of the interface it leaves by
      expect(warned.airgap?.outside).toEqual(expect.arrayContaining([route, 'fe80::/64 dev eth0']));
      expect(warned.airgap?.outside).toHaveLength(2);
      expect(`${warned.out}${warned.err}`).toMatch(
        new RegExp(`air gap not enforced: .*a default route: ${route.replace(/\./gu, '\\.')}`, 'u'),
      );
      expect(`${warned.out}${warned.err}`).toMatch(/docker run --network none/u);

      const strict = await runIn(ns(), { AIRGAP: 'strict', ...allow });
      expect(strict.code).toBe(3);
      expect(strict.err).toContain('AIRGAP_NOT_ENFORCED');
      expect(strict.airgap).toBeNull();
    },
    60_000,
  );

  it('AIRGAP=false: nothing checked, nothing warned', async () => {
    const r = await runIn(routed4, { AIRGAP: 'false' });
    expect(r.code, r.err).toBe(0);
    expect(r.airgap).toMatchObject({ enabled: false });
    expect(`${r.out}${r.err}`).not.toMatch(/air gap not enforced/u);
  }, 60_000);
});
