/**
 * One server-sent event frame (the text between two blank lines), read per
 * the HTML event-stream rules that matter here: comment lines skipped,
 * `event` and `data` fields, one optional space after the colon, data lines
 * joined with a newline.
 *
 * @example
 * parseSseFrame('event: heartbeat\ndata: {"cursor":3}'); // { event: 'heartbeat', data: '{"cursor":3}' }
 */
export function parseSseFrame(text: string): { readonly event: string; readonly data: string } {
  let event = 'message';
  const data: string[] = [];
  for (const line of text.split('\n')) {
    if (line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i === -1 ? line : line.slice(0, i);
    const value = i === -1 ? '' : line.slice(i + 1).replace(/^ /, '');
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  return { event, data: data.join('\n') };
}
