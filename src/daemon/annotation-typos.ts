// Annotation keys that look like cgfence's but are not (cgfenc.io/exec-allow,
// cgfence.com/mode, cgfence-io/profile): such a container would run unfenced without a
// word, so the daemon writes a warning record naming the key and what was probably meant.
import { KEYS, PREFIX } from '../policy/annotations';

const DOMAIN = PREFIX.slice(0, -1); // cgfence.io
const NAMES = new Set(Object.values(KEYS).map((k) => k.slice(PREFIX.length)));

function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return d[a.length][b.length];
}

export interface AnnotationTypo {
  key: string;
  suggestion: string;
}

export function misspeltKeys(annotations: Record<string, string> | undefined | null): AnnotationTypo[] {
  const out: AnnotationTypo[] = [];
  for (const key of Object.keys(annotations ?? {})) {
    if (key.startsWith(PREFIX)) continue; // unknown names under cgfence.io/ are refused by the policy parser
    const slash = key.lastIndexOf('/');
    const sep = slash >= 0 ? slash : Math.max(key.lastIndexOf('.'), key.lastIndexOf('_'));
    const domain = sep >= 0 ? key.slice(0, sep) : key;
    const name = sep >= 0 ? key.slice(sep + 1) : '';
    const domainClose = distance(domain.toLowerCase(), DOMAIN) <= 3 || /c\W?g\W?f\W?e?n\W?c/i.test(domain);
    if (!domainClose) continue;
    out.push({ key, suggestion: NAMES.has(name.toLowerCase()) ? `${PREFIX}${name.toLowerCase()}` : `${PREFIX}${name || '...'}` });
  }
  return out;
}
