import { openStore } from '../../src/storage/index.ts';
import { storeConformance } from './conformance.ts';
import { PG_URL, postgresProblem, IN_CI, scratchSchema, dropSchema } from '../support/services.ts';

let schema = '';
storeConformance('postgres', {
  async skip() {
    const problem = await postgresProblem();
    if (problem !== undefined && IN_CI) throw new Error(`${problem}; CI=true forbids skipping`);
    return problem;
  },
  async open() {
    schema = scratchSchema();
    const s = await openStore({ url: PG_URL, dataDir: '', pgSchema: schema });
    await s.migrate();
    return s;
  },
  async openPeer() {
    // A second pool on the same schema, as a second server replica would have.
    return openStore({ url: PG_URL, dataDir: '', pgSchema: schema });
  },
  async cleanup() {
    await dropSchema(schema);
  },
});
