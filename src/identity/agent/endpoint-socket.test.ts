import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WritError } from '../../kernel/index.ts';
import { grpcTargetOf, parseEndpointSocket } from './endpoint-socket.ts';

describe('parseEndpointSocket (SPIFFE_ENDPOINT_SOCKET)', () => {
  it('accepts unix:///absolute/path', () => {
    assert.deepEqual(parseEndpointSocket('unix:///run/writ/agent.sock'), { kind: 'unix', path: '/run/writ/agent.sock' });
    assert.deepEqual(parseEndpointSocket('unix:///tmp/a%20b.sock'), { kind: 'unix', path: '/tmp/a b.sock' });
  });
  it('accepts tcp://<ip>:<port> for IPv4 and IPv6', () => {
    assert.deepEqual(parseEndpointSocket('tcp://127.0.0.1:8081'), { kind: 'tcp', host: '127.0.0.1', port: 8081, family: 4 });
    assert.deepEqual(parseEndpointSocket('tcp://[::1]:8081'), { kind: 'tcp', host: '::1', port: 8081, family: 6 });
  });
  it('maps addresses to grpc-js targets', () => {
    assert.equal(grpcTargetOf(parseEndpointSocket('unix:///run/writ/agent.sock')), 'unix:///run/writ/agent.sock');
    assert.equal(grpcTargetOf(parseEndpointSocket('tcp://127.0.0.1:8081')), 'ipv4:127.0.0.1:8081');
    assert.equal(grpcTargetOf(parseEndpointSocket('tcp://[::1]:8081')), 'ipv6:[::1]:8081');
  });

  const refusals: Array<[string, string]> = [
    ['/run/writ/agent.sock', 'not a URI'],
    ['unix:/run/agent.sock', 'a unix address must be `unix:///absolute/path`'],
    ['unix://host/run/agent.sock', 'a unix address must be `unix:///absolute/path`'],
    ['unix:///', 'a unix address must name a socket file'],
    ['unix:///run/agent.sock?x=1', 'a query is not allowed'],
    ['unix:///run/agent.sock#f', 'a fragment is not allowed'],
    ['unix:///run/%zz', 'the path has a malformed percent-encoding'],
    ['tcp://localhost:8081', 'a tcp address must use an IP address, not a host name'],
    ['tcp://127.0.0.1', 'a tcp address must have a port'],
    ['tcp://127.0.0.1:0', 'the port must be 1 to 65535'],
    ['tcp://127.0.0.1:8081/path', 'a tcp address must not have a path'],
    ['tcp://127.0.0.1:8081/', 'a tcp address must not have a path'],
    ['tcp://user@127.0.0.1:8081', 'user info is not allowed'],
    ['http://127.0.0.1:8081', 'the scheme must be `unix` or `tcp`'],
  ];
  for (const [input, why] of refusals) {
    it(`refuses \`${input}\``, () => {
      assert.throws(() => parseEndpointSocket(input), (e: unknown) => {
        assert.ok(e instanceof WritError);
        assert.equal(e.code, 'ERR_IDENTITY_ENDPOINT_SOCKET_INVALID');
        assert.equal(e.message, `invalid workload endpoint \`${input}\`: ${why}`);
        return true;
      });
    });
  }
});
