// Names that come from the kernel (paths, comm) are bytes, not text: a file may be named with
// bytes that are not UTF-8. Decoding them as UTF-8 would turn every bad byte into U+FFFD, so
// two different names could produce the same record. A name that is valid UTF-8 is recorded
// as the string it is; one that is not is recorded escaped (`\xNN` for each byte that is not
// part of a UTF-8 character, `\\` for a backslash) in the same field, with the exact bytes in
// `<field>_raw` (base64), so nothing is lost and the escaped form cannot be mistaken for a
// name that really contains a backslash.
import { isUtf8 } from 'node:buffer';

/** Length of the valid UTF-8 character starting at b[i], or 0 when there is none. */
function utf8Char(b: Buffer, i: number): number {
  const c = b[i];
  const cont = (j: number, lo = 0x80, hi = 0xbf) => i + j < b.length && b[i + j] >= lo && b[i + j] <= hi;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c === 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
  if ((c >= 0xe1 && c <= 0xec) || c === 0xee || c === 0xef) return cont(1) && cont(2) ? 3 : 0;
  if (c === 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;
  if (c === 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xf1 && c <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c === 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

/**
 * The bytes as text, losslessly: UTF-8 characters as they are (each passed through `char`),
 * every other byte as `\xNN` (always >= \x80: bytes below are ASCII characters).
 */
export function escapeBytes(b: Buffer, char: (s: string) => string = (s) => (s === '\\' ? '\\\\' : s)): string {
  let out = '';
  for (let i = 0; i < b.length;) {
    const n = utf8Char(b, i);
    if (n === 0) {
      out += `\\x${b[i].toString(16).padStart(2, '0')}`;
      i++;
    } else {
      out += char(b.toString('utf8', i, i + n));
      i += n;
    }
  }
  return out;
}

/** The fields of a name for an audit record: `{field: text}`, or escaped with `field_raw`. */
export function exactName(field: string, bytes: Buffer): Record<string, string> {
  if (isUtf8(bytes)) return { [field]: bytes.toString('utf8') };
  return { [field]: escapeBytes(bytes), [`${field}_raw`]: bytes.toString('base64') };
}

/** The exact bytes of a name field of a record (its `_raw` twin when there is one). */
export function nameBytes(r: Record<string, unknown>, field: string): Buffer | null {
  const raw = r[`${field}_raw`];
  if (typeof raw === 'string') return Buffer.from(raw, 'base64');
  const v = r[field];
  return typeof v === 'string' ? Buffer.from(v, 'utf8') : null;
}
