/**
 * Echo untrusted input in messages: at most 128 UTF-16 code units, with control,
 * format, line-separator characters, lone surrogates and backticks replaced by `?`.
 *
 * @example
 * printable('a\nb'); // 'a?b'
 */
export function printable(s: string): string {
  const cut = s.length > 128 ? `${s.slice(0, 128)}…` : s;
  return cut.replace(/[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}`]/gu, '?');
}
