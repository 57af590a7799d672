import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSseFrame } from './sse-frame.ts';

test('parseSseFrame reads event and data, skips comments, joins data lines, strips one space', () => {
  const table: [string, { event: string; data: string }][] = [
    ['event: heartbeat\ndata: {"cursor":3}', { event: 'heartbeat', data: '{"cursor":3}' }],
    ['id: 7\nevent: revocation\ndata: {"a":1}', { event: 'revocation', data: '{"a":1}' }],
    [': keep-alive comment\ndata:  two spaces', { event: 'message', data: ' two spaces' }],
    ['data: line one\ndata: line two', { event: 'message', data: 'line one\nline two' }],
    ['retry: 1000', { event: 'message', data: '' }],
    ['data', { event: 'message', data: '' }],
  ];
  for (const [text, want] of table) assert.deepEqual(parseSseFrame(text), want, text);
});
