// Times as people read them: the local date, time and UTC offset (2026-11-30 13:58:36.343 +01:00),
// or UTC with --utc (2026-11-30 12:58:36.343 Z). The audit log itself stays RFC 3339 UTC.

const pad = (n: number, w = 2) => String(Math.abs(n)).padStart(w, '0');

export function formatTime(d: Date, opts: { utc?: boolean } = {}): string {
  if (Number.isNaN(d.getTime())) return 'invalid date';
  if (opts.utc) {
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)} Z`;
  }
  const off = -d.getTimezoneOffset();
  const zone = `${off < 0 ? '-' : '+'}${pad(Math.trunc(off / 60))}:${pad(off % 60)}`;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)} ${zone}`;
}

/** An RFC 3339 string from the log or the daemon; anything unparsable is shown as it is. */
export function formatTimestamp(ts: unknown, opts: { utc?: boolean } = {}): string {
  if (typeof ts !== 'string') return '';
  const ms = Date.parse(ts);
  return Number.isNaN(ms) ? ts : formatTime(new Date(ms), opts);
}
