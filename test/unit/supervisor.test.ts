/**
 * The supervisor with small node child scripts: prefixed lines, process groups, graceful then forced
 * stops, ordering, signals. Every test checks that its processes are gone.
 */
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  firstEnd,
  forwardedSignal,
  parentDeathWrapper,
  SignalTrap,
  stopInOrder,
  SupervisedChild,
  type ChildSpec,
} from '../../src/run/supervisor.js';
import { findExecutable } from '../../src/run/executable.js';
import { alive, waitGone } from '../helpers/run-process.js';
import { tempDir } from '../helpers/tmp.js';

const started: SupervisedChild[] = [];
const pids: number[] = [];

afterEach(async () => {
  for (const c of started.splice(0)) await c.kill();
  expect(await waitGone(pids.splice(0), 2000), 'processes left behind').toEqual([]);
});

function node(role: string, script: string): ChildSpec {
  return { role, command: process.execPath, args: ['-e', script], env: process.env };
}

async function start(spec: ChildSpec, lines: string[] = []): Promise<SupervisedChild> {
  const child = await SupervisedChild.start(spec, (role, line) => lines.push(`[${role}] ${line}`));
  started.push(child);
  pids.push(child.pid);
  return child;
}

describe('SupervisedChild', () => {
  it('prefixes every line of stdout and stderr, including a last line without a newline', async () => {
    const lines: string[] = [];
    const child = await start(
      node(
        'app',
        `process.stdout.write('one\\ntw'); setTimeout(() => { process.stdout.write('o\\r\\n'); process.stderr.write('err line\\n'); process.stdout.write('last'); }, 50);`,
      ),
      lines,
    );
    expect(await child.exited).toEqual({ code: 0, signal: null });
    await child.drained;
    expect(lines).toEqual(expect.arrayContaining(['[app] one', '[app] two', '[app] err line', '[app] last']));
    expect(lines).toHaveLength(4);
    expect(child.tail(2)).toHaveLength(2);
  });

  it('decodes UTF-8 split across chunks', async () => {
    const lines: string[] = [];
    const child = await start(
      node(
        'llm',
        `const b = Buffer.from('héllo ✓\\n'); process.stdout.write(b.subarray(0, 2)); setTimeout(() => process.stdout.write(b.subarray(2)), 30);`,
      ),
      lines,
    );
    await child.exited;
    await child.drained;
    expect(lines).toEqual(['[llm] héllo ✓']);
  });

  it('stops gracefully with SIGTERM within the grace period', async () => {
    const child = await start(
      node(
        'app',
        `process.on('SIGTERM', () => { console.log('bye'); process.exit(0); }); setInterval(() => {}, 1e6); console.log('up');`,
      ),
    );
    await waitForLine(child, 'up');
    const result = await child.stop(3000);
    expect(result).toMatchObject({ forced: false, alreadyExited: false, exit: { code: 0, signal: null } });
    expect(alive(child.pid)).toBe(false);
  });

  it('SIGKILLs a child that ignores SIGTERM, once the grace period is over', async () => {
    const child = await start(
      node(
        'app',
        `process.on('SIGTERM', () => console.log('ignored')); setInterval(() => {}, 1e6); console.log('up');`,
      ),
    );
    await waitForLine(child, 'up');
    const t0 = performance.now();
    const result = await child.stop(400);
    const ms = performance.now() - t0;
    expect(result.forced).toBe(true);
    expect(result.exit).toEqual({ code: null, signal: 'SIGKILL' });
    expect(ms).toBeGreaterThanOrEqual(380);
    expect(ms).toBeLessThan(3000);
  });

  it('signals the whole process group: a grandchild is stopped with its parent', async () => {
    const child = await start({
      role: 'app',
      command: '/bin/sh',
      args: ['-c', 'sleep 300 & echo "grandchild $!"; wait'],
      env: process.env,
    });
    await waitForLine(child, 'grandchild');
    const grandchild = Number(/grandchild (\d+)/u.exec(child.tail(5).join('\n'))?.[1]);
    pids.push(grandchild);
    expect(alive(grandchild)).toBe(true);
    await child.stop(2000);
    expect(await waitGone([grandchild], 1000)).toEqual([]);
  });

  it('cleans up a group whose leader already exited', async () => {
    const child = await start({
      role: 'app',
      command: '/bin/sh',
      args: ['-c', 'sleep 300 & echo "grandchild $!"'],
      env: process.env,
    });
    await child.exited;
    await child.drained;
    const grandchild = Number(/grandchild (\d+)/u.exec(child.tail(5).join('\n'))?.[1]);
    pids.push(grandchild);
    expect(child.groupAlive()).toBe(true);
    const result = await child.stop(1000);
    expect(result.alreadyExited).toBe(true);
    expect(await waitGone([grandchild], 1000)).toEqual([]);
    expect(child.groupAlive()).toBe(false);
  });

  it('reports a command that cannot be executed as an environment error (exit 3)', async () => {
    await expect(
      SupervisedChild.start(
        { role: 'app', command: '/no/such/binary', args: [], env: process.env },
        () => undefined,
      ),
    ).rejects.toMatchObject({ exitCode: 3, code: 'PATH_MISSING' });
  });
});

describe('supervision', () => {
  it('firstEnd resolves with the child that exits first', async () => {
    const trap = new SignalTrap(['SIGUSR2']);
    try {
      const app = await start(node('app', 'setTimeout(() => process.exit(3), 100)'));
      const llm = await start(node('llm', 'setInterval(() => {}, 1e6)'));
      const end = await firstEnd([app, llm], trap);
      expect(end).toEqual({ kind: 'child-exit', role: 'app', exit: { code: 3, signal: null } });
    } finally {
      trap.dispose();
    }
  });

  it('firstEnd resolves with a signal caught by the trap, which keeps the process alive', async () => {
    const trap = new SignalTrap(['SIGUSR2']);
    try {
      const llm = await start(node('llm', 'setInterval(() => {}, 1e6)'));
      setTimeout(() => process.kill(process.pid, 'SIGUSR2'), 50);
      const end = await firstEnd([llm], trap);
      expect(end).toEqual({ kind: 'signal', signal: 'SIGUSR2' });
      expect(trap.stopRequested()).toBe(true);
    } finally {
      trap.dispose();
    }
  });

  it('stops the children one after the other, in order', async () => {
    const order: string[] = [];
    const script = `process.on('SIGTERM', () => setTimeout(() => process.exit(0), 150)); setInterval(() => {}, 1e6); console.log('up')`;
    const app = await start(node('app', script));
    const llm = await start(node('llm', script));
    await Promise.all([waitForLine(app, 'up'), waitForLine(llm, 'up')]);
    void app.exited.then(() => order.push('app'));
    void llm.exited.then(() => order.push('llm'));
    const results = await stopInOrder([app, llm], 2000, 'SIGTERM', null);
    expect(order).toEqual(['app', 'llm']);
    expect(results.map((r) => r.forced)).toEqual([false, false]);
  });

  it('a second signal while stopping kills what is left at once', async () => {
    const trap = new SignalTrap(['SIGUSR2']);
    try {
      const stubborn = `process.on('SIGTERM', () => {}); setInterval(() => {}, 1e6); console.log('up')`;
      const app = await start(node('app', stubborn));
      const llm = await start(node('llm', stubborn));
      await Promise.all([waitForLine(app, 'up'), waitForLine(llm, 'up')]);
      process.kill(process.pid, 'SIGUSR2');
      await trap.received;
      setTimeout(() => process.kill(process.pid, 'SIGUSR2'), 200);
      const t0 = performance.now();
      const results = await stopInOrder([app, llm], 10_000, 'SIGTERM', trap);
      expect(performance.now() - t0).toBeLessThan(3000);
      expect(results.every((r) => r.exit?.signal === 'SIGKILL')).toBe(true);
    } finally {
      trap.dispose();
    }
  });

  it('forwards SIGINT as SIGINT and everything else as SIGTERM', () => {
    expect(forwardedSignal('SIGINT')).toBe('SIGINT');
    expect(forwardedSignal('SIGTERM')).toBe('SIGTERM');
    expect(forwardedSignal('SIGHUP')).toBe('SIGTERM');
  });
});

describe('parent death', () => {
  it('finds setpriv --pdeathsig on Linux with util-linux', async () => {
    const wrapper = await parentDeathWrapper();
    if (process.platform !== 'linux' || (await findExecutable('setpriv')) === null) {
      expect(wrapper).toBeNull();
      return;
    }
    expect(wrapper?.slice(1)).toEqual(['--pdeathsig', 'KILL', '--']);
  });

  it('a child started through the wrapper dies with its parent, even by SIGKILL', async () => {
    const wrapper = await parentDeathWrapper();
    if (wrapper === null) return;
    // the parent: a shell that starts `sleep` through the wrapper and reports its pid
    const parent = await start({
      role: 'parent',
      command: '/bin/sh',
      args: ['-c', `${wrapper.join(' ')} sleep 300 & echo "child $!"; wait`],
      env: process.env,
    });
    await waitForLine(parent, 'child');
    const child = Number(/child (\d+)/u.exec(parent.tail(5).join('\n'))?.[1]);
    pids.push(child);
    // only the parent shell itself, not its group (the group would take the child with it)
    process.kill(parent.pid, 'SIGKILL');
    expect(await waitGone([child], 2000)).toEqual([]);
  });
});

describe('findExecutable', () => {
  it('looks a name up on PATH and a path relative to cwd', async () => {
    const dir = await tempDir('codi-exe-');
    await mkdir(join(dir, 'bin'));
    await writeFile(join(dir, 'bin/tool'), '#!/bin/sh\n');
    await chmod(join(dir, 'bin/tool'), 0o755);
    await writeFile(join(dir, 'bin/plain'), 'x');
    expect(await findExecutable('tool', { PATH: `/nonexistent:${join(dir, 'bin')}` })).toBe(
      join(dir, 'bin/tool'),
    );
    expect(await findExecutable('plain', { PATH: join(dir, 'bin') })).toBeNull();
    expect(await findExecutable('./bin/tool', {}, dir)).toBe(join(dir, 'bin/tool'));
    expect(await findExecutable('bin', { PATH: dir })).toBeNull();
  });
});

async function waitForLine(child: SupervisedChild, text: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!child.tail(50).some((l) => l.includes(text))) {
    if (Date.now() > deadline || child.exit !== undefined) {
      throw new Error(`no "${text}" from ${child.role}: ${child.tail(50).join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
