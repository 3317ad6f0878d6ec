/**
 * deploy/kubernetes/: every manifest validated offline against the Kubernetes API schemas (the
 * kubernetes-models classes), the objects checked against each other (selectors, ports, names), and
 * the ConfigMap against run's settings rows.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { Deployment } from 'kubernetes-models/apps/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ConfigMap, PersistentVolumeClaim, Service } from 'kubernetes-models/v1';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import {
  CONFIG_MAP_FILE,
  CONFIG_MAP_NAME,
  configMapData,
  configMapYaml,
  DOCKERFILE,
  imageEnv,
  SECRET_NAME,
} from '../../src/kubernetes.js';
import { resolveRunConfig } from '../../src/run/config.js';
import { RUN_SETTINGS, type SettingRow } from '../../src/run/settings.js';

const REPO = new URL('../../', import.meta.url);
const DIR = new URL('deploy/kubernetes/', REPO);
const read = (file: string): string => readFileSync(new URL(file, REPO), 'utf8');

interface Validated {
  validate(): void;
}
type Manifest = Record<string, unknown> & { apiVersion: string; kind: string };

/** The model class of each kind the manifests use, by apiVersion and kind. */
const MODELS: Record<string, new (data: never) => Validated> = {
  'v1/ConfigMap': ConfigMap,
  'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
};

/** Builds the object with its model class and validates it against the schema (throws if invalid). */
function validateManifest(m: Manifest): void {
  const Model = MODELS[`${m.apiVersion}/${m.kind}`];
  if (!Model) throw new Error(`no model class for ${m.apiVersion} ${m.kind}`);
  new Model(m as never).validate();
}

function parseYaml(file: string): Manifest[] {
  return parseAllDocuments(readFileSync(new URL(file, DIR), 'utf8')).map((doc) => {
    expect(doc.errors, file).toEqual([]);
    return doc.toJS() as Manifest;
  });
}

const files = readdirSync(DIR)
  .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
  .sort();
const manifests = files.flatMap(parseYaml);
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- the shape the caller reads
const ofKind = <T>(kind: string): T => {
  const found = manifests.filter((m) => m.kind === kind);
  expect(found, kind).toHaveLength(1);
  return found[0] as T;
};

interface Probe {
  httpGet?: { path: string; port: string | number };
  exec?: { command: string[] };
}
interface Container {
  ports: { name: string; containerPort: number }[];
  envFrom: { configMapRef?: { name: string }; secretRef?: { name: string; optional?: boolean } }[];
  startupProbe: Probe;
  readinessProbe: Probe;
  livenessProbe: Probe;
  resources: { requests: Record<string, string>; limits: Record<string, string> };
  securityContext: Record<string, unknown>;
  volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[];
}
interface DeploymentShape {
  spec: {
    selector: { matchLabels: Record<string, string> };
    template: {
      metadata: { labels: Record<string, string> };
      spec: {
        securityContext: Record<string, unknown>;
        containers: Container[];
        volumes: { name: string; persistentVolumeClaim?: { claimName: string; readOnly?: boolean } }[];
      };
    };
  };
}

describe('deploy/kubernetes: the manifests against the Kubernetes schemas', () => {
  it('kustomization.yaml lists every manifest of the folder, once', () => {
    const k = parseAllDocuments(readFileSync(new URL('kustomization.yaml', DIR), 'utf8'))[0]?.toJS() as {
      kind: string;
      resources: string[];
    };
    expect(k.kind).toBe('Kustomization');
    expect([...k.resources].sort()).toEqual(files);
  });

  it.each(files)('%s: every object built with its model class validates', (file) => {
    const objects = parseYaml(file);
    expect(objects.length).toBeGreaterThan(0);
    for (const m of objects)
      expect(() => {
        validateManifest(m);
      }).not.toThrow();
  });

  it('the folder holds each kind the issue asks for', () => {
    expect(manifests.map((m) => m.kind).sort()).toEqual([
      'ConfigMap',
      'Deployment',
      'NetworkPolicy',
      'PersistentVolumeClaim',
      'PodDisruptionBudget',
      'Service',
    ]);
  });

  it('a broken manifest fails validation: the check can fail', () => {
    const deployment = structuredClone(ofKind<Manifest & DeploymentShape>('Deployment'));
    const container = deployment.spec.template.spec.containers[0];
    if (!container) throw new Error('no container');
    (container.ports[0] as { containerPort: unknown }).containerPort = '8000';
    expect(() => {
      validateManifest(deployment);
    }).toThrow(/containerPort must be integer/u);

    const noTemplate = structuredClone(ofKind<Manifest & DeploymentShape>('Deployment')) as Manifest;
    delete (noTemplate.spec as Record<string, unknown>).template;
    expect(() => {
      validateManifest(noTemplate);
    }).toThrow(/template/u);

    const pvc = structuredClone(ofKind<Manifest>('PersistentVolumeClaim'));
    (pvc.spec as Record<string, unknown>).accessModes = 'ReadOnlyMany';
    expect(() => {
      validateManifest(pvc);
    }).toThrow(/accessModes must be array/u);

    expect(() => {
      validateManifest({ apiVersion: 'v1', kind: 'Pod' });
    }).toThrow(/no model class/u);
  });
});

describe('deploy/kubernetes: the objects fit together', () => {
  const deployment = ofKind<DeploymentShape>('Deployment');
  const pod = deployment.spec.template;
  const container = pod.spec.containers[0] as Container;
  const port = (p: string | number): number =>
    typeof p === 'number' ? p : (container.ports.find((x) => x.name === p)?.containerPort ?? -1);

  it('the pod runs as UID 1000 on a read-only root file system, with resources', () => {
    expect(pod.spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000 });
    expect(container.securityContext).toMatchObject({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    });
    expect(container.resources.requests).toHaveProperty('cpu');
    expect(container.resources.requests).toHaveProperty('memory');
    expect(container.resources.limits).toHaveProperty('memory');
    // the threads of inference are what the CPU request pays for
    const data = ofKind<{ data: Record<string, string> }>('ConfigMap').data;
    expect(container.resources.requests.cpu).toBe(data.LLAMA_CPP_THREADS);
  });

  it('probes: startup the image health check, ready the gateway /health on 8081, alive the app /healthz on 8000', () => {
    expect(container.startupProbe.exec?.command).toEqual(['node', '/opt/codi-adapter/docker/healthcheck.js']);
    expect(container.readinessProbe.httpGet?.path).toBe('/health');
    expect(port(container.readinessProbe.httpGet?.port ?? '')).toBe(8081);
    expect(container.livenessProbe.httpGet?.path).toBe('/healthz');
    expect(port(container.livenessProbe.httpGet?.port ?? '')).toBe(8000);
    // the image's HEALTHCHECK runs the same file
    expect(read(DOCKERFILE)).toContain('CMD ["node", "/opt/codi-adapter/docker/healthcheck.js"]');
  });

  it('the models volume: a ReadOnlyMany claim, mounted read-only at /models', () => {
    const pvc = ofKind<{ metadata: { name: string }; spec: { accessModes: string[] } }>(
      'PersistentVolumeClaim',
    );
    expect(pvc.spec.accessModes).toEqual(['ReadOnlyMany']);
    const volume = pod.spec.volumes.find((v) => v.persistentVolumeClaim?.claimName === pvc.metadata.name);
    expect(volume?.persistentVolumeClaim?.readOnly).toBe(true);
    expect(container.volumeMounts.find((m) => m.name === volume?.name)).toEqual({
      name: volume?.name,
      mountPath: '/models',
      readOnly: true,
    });
  });

  it('settings from the ConfigMap, secret settings from an optional Secret', () => {
    expect(container.envFrom).toEqual([
      { configMapRef: { name: CONFIG_MAP_NAME } },
      { secretRef: { name: SECRET_NAME, optional: true } },
    ]);
  });

  it('the Service, the PodDisruptionBudget and the NetworkPolicy select the pods', () => {
    const labels = pod.metadata.labels;
    expect(deployment.spec.selector.matchLabels).toEqual(labels);
    const service = ofKind<{
      spec: { selector: Record<string, string>; ports: { port: number; targetPort: string }[] };
    }>('Service');
    expect(service.spec.selector).toEqual(labels);
    expect(service.spec.ports.map((p) => [p.port, port(p.targetPort)])).toEqual([
      [8000, 8000],
      [8081, 8081],
    ]);
    const pdb = ofKind<{ spec: { selector: { matchLabels: Record<string, string> } } }>(
      'PodDisruptionBudget',
    );
    expect(pdb.spec.selector.matchLabels).toEqual(labels);
    const policy = ofKind<{ spec: { podSelector: { matchLabels: Record<string, string> } } }>(
      'NetworkPolicy',
    );
    expect(policy.spec.podSelector.matchLabels).toEqual(labels);
  });

  it('the NetworkPolicy denies egress but to address blocks and the cluster DNS', () => {
    const policy = ofKind<{
      spec: {
        policyTypes: string[];
        egress: { to?: Record<string, unknown>[]; ports?: { port: number }[] }[];
      };
    }>('NetworkPolicy');
    expect(policy.spec.policyTypes).toContain('Egress');
    for (const rule of policy.spec.egress) {
      // a rule without `to` would allow every destination
      expect(rule.to?.length).toBeGreaterThan(0);
      for (const peer of rule.to ?? []) {
        const dns = peer.namespaceSelector !== undefined;
        if (dns) expect(rule.ports?.map((p) => p.port)).toEqual([53, 53]);
        else expect(Object.keys(peer)).toEqual(['ipBlock']);
      }
    }
  });
});

describe('deploy/kubernetes/configmap.yaml: every setting of run', () => {
  const image = imageEnv(read(DOCKERFILE));
  const data = ofKind<{ data: Record<string, string> }>('ConfigMap').data;

  it('is what npm run docs writes from the settings rows and the image', () => {
    expect(read(CONFIG_MAP_FILE)).toBe(configMapYaml(RUN_SETTINGS, image));
  });

  it('holds every setting that is not a secret, with its default, or the value the image sets', () => {
    const open = RUN_SETTINGS.filter((r: SettingRow) => r.secret !== true);
    expect(Object.keys(data)).toEqual(open.map((r) => r.name));
    expect(data).toEqual(configMapData(RUN_SETTINGS, image));
    expect(data.LLM_PORT).toBe('8081');
    expect(data.LLM_HOST).toBe('0.0.0.0');
    expect(data.LLAMA_SERVER_BIN).toBe('/opt/llama.cpp/bin/llama-server');
    // computed defaults stay computed
    expect(data.ADAPTER_PATH).toBe('');
  });

  it('run accepts every value as it stands', () => {
    const config = resolveRunConfig({ env: data, flags: {} });
    expect(config.llmPort).toBe(8081);
    expect(config.baseModelPath).toBe('/models/base/qwen2.5-coder-1.5b.gguf');
  });

  it('a secret setting is never in it, and a new setting is', () => {
    const rows: SettingRow[] = [
      ...RUN_SETTINGS,
      {
        name: 'LLM_API_KEY',
        flag: 'llm-api-key',
        kind: 'path',
        default: '',
        secret: true,
        description: 'a key',
      },
      { name: 'NEW_SETTING', flag: 'new-setting', kind: 'count', default: '3', description: 'new' },
    ];
    const generated = configMapData(rows, image);
    expect(generated).not.toHaveProperty('LLM_API_KEY');
    expect(generated.NEW_SETTING).toBe('3');
    expect(configMapYaml(rows, image)).toContain('LLM_API_KEY come from Secret/codi-secrets');
  });

  it("reads the image's ENV of the last stage only, and refuses what it cannot read", () => {
    expect(imageEnv('FROM a\nENV X=1\nFROM b\nENV Y=2 \\\n    Z=3\n')).toEqual({ Y: '2', Z: '3' });
    expect(() => imageEnv('FROM a\nENV X "1"\n')).toThrow(/cannot read ENV/u);
  });
});
