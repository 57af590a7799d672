/**
 * What the agent tests that run real `writ` processes share: run a `writ`
 * command to completion, wait for a state, pick a free port.
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

export const WRIT = fileURLToPath(new URL('../../bin/writ.js', import.meta.url));

/** Run `writ args…` with only PATH in its environment (optionally as another uid/gid). */
export function writ(args: string[], o: { uid?: number; gid?: number; env?: Record<string, string> } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const { env, ...ids } = o;
  return new Promise((resolve) => {
    const cp = spawn(process.execPath, [WRIT, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, ...ids });
    let stdout = '';
    let stderr = '';
    cp.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    cp.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    cp.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * Wait for a process to reach a state, not a bound on how fast it gets there:
 * a loaded CI machine can take more than 30 s to start `writ up`.
 */
export async function waitFor<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 120_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

/** A TCP port nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => resolve(typeof addr === 'object' && addr !== null ? addr.port : 0));
    });
  });
}
