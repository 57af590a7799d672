import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../../src/storage/index.ts';
import { storeConformance } from './conformance.ts';

let dir = '';
storeConformance('sqlite (file)', {
  async open() {
    dir = mkdtempSync(join(tmpdir(), 'writ-sqlite-'));
    const s = await openStore({ url: '', dataDir: dir });
    await s.migrate();
    return s;
  },
  // No in-process peer: node:sqlite is synchronous, so a second connection in
  // the same thread would block on the first one's lock. Two processes sharing
  // one file are covered by BEGIN IMMEDIATE plus the busy timeout.
  async cleanup() {
    rmSync(dir, { recursive: true, force: true });
  },
});

storeConformance('memory (sqlite in memory)', {
  async open() {
    const s = await openStore({ url: 'sqlite::memory:', dataDir: '' });
    await s.migrate();
    return s;
  },
});
