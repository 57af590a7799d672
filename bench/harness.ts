/**
 * A tiny benchmark harness: run a measurement several times, report the
 * median with min–max, and express it as a ratio to a floor measured in the
 * same run (this machine is noisy; ratios travel, absolute numbers do not).
 */

import { generateKeyPairSync, sign } from 'node:crypto';
import pg from 'pg';

/**
 * The signing floor most issuance benchmarks compare with: raw ES256
 * signatures (node:crypto, one thread) of a JWT-sized input per second,
 * measured for `ms` milliseconds.
 */
export function rawEs256SignRate(ms: number, inputBytes = 240): number {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const input = Buffer.from('e'.repeat(inputBytes));
  let n = 0;
  const t = performance.now();
  while (performance.now() - t < ms) {
    for (let i = 0; i < 100; i++) sign('sha256', input, { key: privateKey, dsaEncoding: 'ieee-p1363' });
    n += 100;
  }
  return n / ((performance.now() - t) / 1000);
}

/** Run `one` `n` times with `inFlight` callers at a time; calls per second. */
export async function pool(n: number, inFlight: number, one: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const t = performance.now();
  await Promise.all(Array.from({ length: inFlight }, async () => {
    while (next < n) await one(next++);
  }));
  return n / ((performance.now() - t) / 1000);
}

/** True when PostgreSQL at `url` answers within 2 s. */
export async function postgresAnswers(url: string): Promise<boolean> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  try {
    await c.connect();
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** One figure of a benchmark. */
export interface Figure {
  readonly name: string;
  readonly unit: string;
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly runs: number;
  /** Name of the figure this one is compared with, and the ratio median/median. */
  readonly baseline?: string;
  readonly ratio?: number;
  readonly note?: string;
}

/** A group of figures with the goals they are checked against. */
export interface BenchResult {
  readonly bench: string;
  readonly figures: readonly Figure[];
  readonly goals: readonly { readonly text: string; readonly met: boolean }[];
}

/** Run `measure` `runs` times; each call returns one sample. */
export async function sample(runs: number, measure: () => Promise<number> | number): Promise<{ median: number; min: number; max: number; runs: number }> {
  const xs: number[] = [];
  for (let i = 0; i < runs; i++) xs.push(await measure());
  xs.sort((a, b) => a - b);
  const mid = Math.floor(xs.length / 2);
  const median = xs.length % 2 === 1 ? (xs[mid] ?? 0) : ((xs[mid - 1] ?? 0) + (xs[mid] ?? 0)) / 2;
  return { median, min: xs[0] ?? 0, max: xs[xs.length - 1] ?? 0, runs };
}

export function figure(name: string, unit: string, s: { median: number; min: number; max: number; runs: number }, base?: Figure, note?: string): Figure {
  return { name, unit, ...s, ...(base === undefined ? {} : { baseline: base.name, ratio: s.median / base.median }), ...(note === undefined ? {} : { note }) };
}

const fmt = (n: number) => (n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(2));

/** Markdown for bench/results/latest.md. */
export function renderMarkdown(results: readonly BenchResult[], meta: Record<string, string>): string {
  const lines = ['# Benchmark results', '', ...Object.entries(meta).map(([k, v]) => `- ${k}: ${v}`), ''];
  for (const r of results) {
    lines.push(`## ${r.bench}`, '', '| figure | median | min–max | runs | ratio to baseline |', '|---|---|---|---|---|');
    for (const f of r.figures) {
      lines.push(`| ${f.name}${f.note === undefined ? '' : ` (${f.note})`} | ${fmt(f.median)} ${f.unit} | ${fmt(f.min)}–${fmt(f.max)} | ${f.runs} | ${f.ratio === undefined ? 'baseline' : `${f.ratio.toFixed(3)} × ${f.baseline ?? ''}`} |`);
    }
    if (r.goals.length > 0) {
      lines.push('', ...r.goals.map((g) => `- ${g.met ? 'met' : 'NOT met'}: ${g.text}`));
    }
    lines.push('');
  }
  return lines.join('\n');
}
