/**
 * The audit log's hot INSERT, shared by the store (both engines) and the
 * SQLite audit worker.
 */
/**
 * Rows per multi-row INSERT of audit events: a batch is written as chunks of
 * these sizes (largest first), so a handful of statement texts serve every
 * batch size and the prepared-statement cache of the SQLite adapter keeps
 * them. 256 rows × 9 columns stays under both engines' bind-parameter limits.
 */
export const AUDIT_INSERT_CHUNKS = [256, 64, 16, 4, 1] as const;

const AUDIT_COLUMNS = ['seq', 'time', 'action', 'outcome', 'actor_id', 'correlation_id', 'event', 'prev_hash', 'hash'] as const;

/**
 * The audit log's hot multi-row INSERT as SQL text, built once per engine and
 * row count: the same statement Kysely compiles from `insertInto('audit_events')`,
 * without compiling it again for every batch.
 */
export function auditInsertSql(kind: 'sqlite' | 'postgres', rows: number): string {
  const cols = AUDIT_COLUMNS.length;
  const tuples: string[] = [];
  for (let r = 0; r < rows; r++) {
    const ps: string[] = [];
    for (let c = 1; c <= cols; c++) ps.push(kind === 'postgres' ? `$${r * cols + c}` : '?');
    tuples.push(`(${ps.join(', ')})`);
  }
  return `insert into "audit_events" (${AUDIT_COLUMNS.map((c) => `"${c}"`).join(', ')}) values ${tuples.join(', ')}`;
}
