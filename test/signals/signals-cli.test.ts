/** `writ signal …` and `writ revocation …` against a real server. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { main } from '../../src/cli/main.ts';
import { startTestServer } from '../support/server.ts';

const ID = 'spiffe://writ.local/ns/ci/sa/builder';

test('writ signal posture|risk|list|context, writ revocation publish|watch', async () => {
  const s = await startTestServer();
  const out: string[] = [];
  const err: string[] = [];
  const io = { out: (x: string) => out.push(x), err: (x: string) => err.push(x), env: { WRIT_SERVER: s.url, WRIT_TOKEN: s.token } };
  const run = async (...argv: string[]): Promise<number> => {
    out.length = 0;
    err.length = 0;
    return main(argv, io);
  };
  try {
    assert.equal(await run('signal', 'posture', ID, '--score', '40', '--failing', 'disk-encryption', '--failing', 'edr-running', '--reason', 'scan-failed'), 0, err.join('\n'));
    assert.match(out[0] ?? '', /^posture-changed spiffe:\/\/writ\.local\/ns\/ci\/sa\/builder accepted as sig_[0-9a-z]+ \(bus cursor 1\)$/);
    // Nothing is live for the workload: re-evaluation kept its SVIDs (no policy forbids them).
    assert.equal(out[1], 're-evaluated: 0 revoked, 1 kept');
    assert.equal(await run('signal', 'risk', ID, '--level', 'critical'), 0, err.join('\n'));
    assert.equal(await run('signal', 'context', ID, '--json'), 0);
    const ctx = JSON.parse(out.join('\n')) as { posture: { score: number; failingChecks: string[] }; risk: { level: string } };
    assert.equal(ctx.posture.score, 40);
    assert.deepEqual(ctx.posture.failingChecks, ['disk-encryption', 'edr-running']);
    assert.equal(ctx.risk.level, 'critical');
    assert.equal(await run('signal', 'list', '--subject', ID), 0);
    assert.match(out[0] ?? '', /^ID\s+TYPE\s+SUBJECT/);
    assert.equal(out[0]?.split('\n').length, 3);

    // Refusals: the server's message on one line, exit 1; usage errors exit 2.
    assert.equal(await run('signal', 'risk', ID, '--level', 'severe'), 1);
    assert.match(err.join('\n'), /`level` must be one of none, low, medium, high, critical/);
    assert.equal(await run('signal', 'posture', ID, '--score', 'high'), 2);
    assert.match(err.join('\n'), /--score must be a whole number from 0 to 100/);

    assert.equal(await run('revocation', 'publish', '--kind', 'subject-revoked', '--subject', ID, '--reason', 'posture-failed'), 0, err.join('\n'));
    assert.match(out[0] ?? '', /^subject-revoked published as [0-9a-f-]{36} \(cursor 3\)$/);
    assert.equal(await run('revocation', 'watch', '--after', '0', '--count', '3'), 0, err.join('\n'));
    assert.equal(out.length, 3);
    assert.match(out[2] ?? '', /^3\t\S+\tsubject-revoked\tspiffe:\/\/writ\.local\/ns\/ci\/sa\/builder\tposture-failed$/);
    assert.match(out[0] ?? '', /^1\t\S+\tsignal\tspiffe:\/\/writ\.local\/ns\/ci\/sa\/builder\tposture-changed$/);
  } finally {
    await s.stop();
  }
});
