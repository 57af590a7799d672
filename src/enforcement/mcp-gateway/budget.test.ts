import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CallBudgets } from './budget.ts';

test('a task is charged per call and refused past its total or per-tool limit', () => {
  const b = new CallBudgets({ totalCalls: 4, callsPerTool: 2, perTool: { search: 3 } });
  assert.equal(b.limited, true);
  assert.deepEqual(b.charge('t1', 'read'), { ok: true, used: 1, usedForTool: 1 });
  assert.deepEqual(b.charge('t1', 'read'), { ok: true, used: 2, usedForTool: 2 });
  assert.deepEqual(b.charge('t1', 'read'), { ok: false, reason: 'tool-budget-exceeded', limit: 2 });
  // The override raises this tool's limit; the refused call was not charged.
  assert.deepEqual(b.charge('t1', 'search'), { ok: true, used: 3, usedForTool: 1 });
  assert.deepEqual(b.charge('t1', 'search'), { ok: true, used: 4, usedForTool: 2 });
  assert.deepEqual(b.charge('t1', 'search'), { ok: false, reason: 'task-budget-exceeded', limit: 4 });
  assert.equal(b.used('t1'), 4);
  assert.equal(b.used('t1', 'read'), 2);
  // Another task has its own budget.
  assert.deepEqual(b.charge('t2', 'read'), { ok: true, used: 1, usedForTool: 1 });
});

test('no limits mean unlimited; a zero limit refuses the first call; bad limits are programmer errors', () => {
  assert.equal(new CallBudgets().limited, false);
  assert.deepEqual(new CallBudgets({ perTool: { delete_repo: 0 } }).charge('t', 'delete_repo'), { ok: false, reason: 'tool-budget-exceeded', limit: 0 });
  assert.throws(() => new CallBudgets({ totalCalls: -1 }), { name: 'TypeError', message: 'totalCalls must be a non-negative integer' });
  assert.throws(() => new CallBudgets({ perTool: { x: 1.5 } }), { name: 'TypeError', message: 'the budget of tool `x` must be a non-negative integer' });
  // `__proto__` and friends are tool names like any other, not prototype members.
  assert.deepEqual(new CallBudgets({ callsPerTool: 1 }).charge('t', 'constructor'), { ok: true, used: 1, usedForTool: 1 });
});

test('the oldest task is forgotten past the key bound', () => {
  const b = new CallBudgets({ totalCalls: 1 }, 2);
  b.charge('a', 'x');
  b.charge('b', 'x');
  b.charge('c', 'x');
  assert.equal(b.used('a'), 0);
  assert.equal(b.used('c'), 1);
});
