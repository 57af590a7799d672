/**
 * A stand-alone enforcement point for tests: follows the revocation stream
 * under an instance name (which registers it) and acknowledges drill events.
 * Usage: node pep-process.ts URL NAME (the credential in WRIT_PEP_TOKEN).
 * Prints `ready` once the stream vouches for the present, then one line per event.
 */
import { systemClock } from '../../src/kernel/index.ts';
import { RevocationStreamClient } from '../../src/signals/index.ts';

const [url, name] = process.argv.slice(2);
const token = process.env.WRIT_PEP_TOKEN;
if (url === undefined || name === undefined || token === undefined) {
  process.stderr.write('usage: pep-process.ts URL NAME (WRIT_PEP_TOKEN set)\n');
  process.exit(2);
}
const client = new RevocationStreamClient({
  url,
  token,
  clock: systemClock,
  stalenessMs: 5000,
  pep: name,
  onEvent: (e) => process.stdout.write(`event ${e.id} ${e.kind}\n`),
  onError: (err) => process.stderr.write(`${String(err)}\n`),
});
client.start();
const ready = setInterval(() => {
  if (client.check({}) !== 'clear') return;
  clearInterval(ready);
  process.stdout.write('ready\n');
}, 20);
process.on('SIGTERM', () => {
  client.stop();
  process.exit(0);
});
