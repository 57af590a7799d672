/**
 * Server-sent events for the revocation streams (the PEP stream and the node
 * stream): take the response over from Fastify and write the stream's head.
 */
import type { ServerResponse } from 'node:http';
import type { FastifyReply } from 'fastify';

/**
 * Hijack `reply` and start a `text/event-stream` response that proxies must
 * not buffer; returns the raw response to write events to.
 *
 * @example
 * const res = openEventStream(reply, req.correlationId);
 * res.write(`id: 7\nevent: revocation\ndata: {}\n\n`);
 */
export function openEventStream(reply: FastifyReply, correlationId: string): ServerResponse {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
    'x-correlation-id': correlationId,
  });
  return res;
}
