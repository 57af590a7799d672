/**
 * A real `writ agent` process whose server side is a fake node API backed by
 * real signing (FakeNodeServer: a CaManager in memory). The test that starts
 * it steers the fake through the IPC channel:
 *   {op: 'outage', on: boolean} | {op: 'removeEntry', id} | {op: 'putEntry', entry} | {op: 'evict'}
 * and gets {ok: true, op} back.
 *
 * argv[2]: JSON {socket, dataDir, entries, x509TtlMs?, jwtTtlMs?, syncSeconds?}
 */
import { systemClock } from '../../src/kernel/index.ts';
import { FakeNodeServer } from '../../src/identity/agent/fake-node-api.test-support.ts';
import type { FakeEntry } from '../../src/identity/agent/fake-node-api.test-support.ts';
import { agentCommand } from '../../src/cli/agent.ts';

interface Config {
  socket: string;
  dataDir: string;
  entries: FakeEntry[];
  x509TtlMs?: number;
  jwtTtlMs?: number;
  syncSeconds?: number;
}

const config = JSON.parse(process.argv[2] ?? '{}') as Config;
const server = await FakeNodeServer.create({ clock: systemClock, x509SvidTtlMs: config.x509TtlMs ?? 10 * 60_000, jwtSvidTtlMs: config.jwtTtlMs ?? 5 * 60_000 });
server.addJoinToken('test-join-token', 'test-node');
for (const e of config.entries) server.putEntry(e);

process.on('message', (raw) => {
  const m = raw as { op: string; on?: boolean; id?: string; entry?: FakeEntry };
  if (m.op === 'outage') server.outage = m.on === true;
  else if (m.op === 'removeEntry' && m.id !== undefined) server.removeEntry(m.id);
  else if (m.op === 'putEntry' && m.entry !== undefined) server.putEntry(m.entry);
  else if (m.op === 'evict') server.evict(server.nodeId('test-node'));
  process.send?.({ ok: true, op: m.op });
});

const cmd = agentCommand(() => server);
const io = { out: (s: string) => process.stdout.write(`${s}\n`), err: (s: string) => process.stderr.write(`${s}\n`), env: process.env };
const code = await cmd.run(
  { server: 'fake://node-api', 'join-token': 'test-join-token', socket: config.socket, 'data-dir': config.dataDir, 'sync-interval': String(config.syncSeconds ?? 1), 'log-level': 'warn' },
  [],
  io,
);
process.disconnect?.();
process.exitCode = code;
