// The strict C parsers on the inputs that the hand-written ones once misread (issue 18): the
// fd-holder's runc-state reader, the launcher's daemon-reply, config.json and node-hint readers.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildStrictC } from '../helpers/kernel';

const repo = path.resolve(__dirname, '..', '..');
let tmp = '';
let probe = '';

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cgfence-strict-'));
  probe = path.join(tmp, 'parse-probe');
  const r = (f: string) => path.join(repo, 'native/cgfence-runc', f);
  buildStrictC(
    probe,
    [
      path.join(repo, 'test/fuzz/parse-probe.c'),
      r('bundle-config.c'),
      r('node-hint.c'),
      r('reply.c'),
      r('strict-json.c'),
      path.join(repo, 'native/fd-holder/runc-state.c'),
    ],
    ['-ljson-c'],
  );
});

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

const parse = (kind: string, input: string | Buffer) => execFileSync(probe, [kind], { input }).toString().trimEnd();
const hex = (s: string) => Buffer.from(s).toString('hex');

describe('runc state (fd-holder)', () => {
  it('reads what runc 1.1 sends', () => {
    const state = {
      ociVersion: '1.0.2',
      fds: ['seccompFd'],
      pid: 4242,
      metadata: 'default/c1',
      state: { ociVersion: '1.0.2', id: 'c1', status: 'creating', pid: 4242, bundle: '/b' },
    };
    expect(parse('runc-state', JSON.stringify(state))).toBe(`1 4242 ${hex('default/c1')}`);
  });

  it('decodes every escape and UTF-8 exactly', () => {
    expect(parse('runc-state', '{"pid":1,"metadata":"\\r\\b\\f\\t\\n\\"\\\\\\/"}')).toBe(`1 1 ${hex('\r\b\f\t\n"\\/')}`);
    expect(parse('runc-state', '{"pid":1,"metadata":"\\u00e9\\ud83d\\ude00 é😀"}')).toBe(`1 1 ${hex('é😀 é😀')}`);
  });

  it.each([
    ['\\uzzzz', '{"pid":1,"metadata":"\\uzzzz"}'],
    ['\\u0x41', '{"pid":1,"metadata":"\\u0x41"}'],
    ['\\u0000 in a key', '{"pid":1,"metadata\\u0000x":"k","metadata":"k"}'],
    ['\\u0000 in a value', '{"pid":1,"metadata":"a\\u0000b"}'],
    ['a lone surrogate', '{"pid":1,"metadata":"\\ud800"}'],
    ['invalid UTF-8', Buffer.from('{"pid":1,"metadata":"\xff"}', 'latin1')],
    ['a raw control character', '{"pid":1,"metadata":"a\tb"}'],
    ['pid as a string', '{"pid":"123","metadata":"k"}'],
    ['pid 1e3', '{"pid":1e3,"metadata":"k"}'],
    ['pid 4294967297', '{"pid":4294967297,"metadata":"k"}'],
    ['pid 0', '{"pid":0,"metadata":"k"}'],
    ['no pid', '{"metadata":"k"}'],
    ['no metadata', '{"pid":1}'],
    ['trailing bytes', '{"pid":1,"metadata":"k"} x'],
    ['a second object', '{"pid":1,"metadata":"k"}{}'],
    ['metadata of 1025 bytes', JSON.stringify({ pid: 1, metadata: 'k'.repeat(1025) })],
    ['single-quoted keys', "{'pid':1,'metadata':'k'}"],
    ['NaN', '{"pid":NaN,"metadata":"k"}'],
  ])('refuses %s', (_what, input) => {
    expect(parse('runc-state', input)).toMatch(/^-1 /);
  });

  it('takes metadata of exactly 1024 bytes whole, and waits for the rest of a cut state', () => {
    expect(parse('runc-state', JSON.stringify({ pid: 7, metadata: 'k'.repeat(1024) }))).toBe(`1 7 ${hex('k'.repeat(1024))}`);
    expect(parse('runc-state', '{"pid":1,"metadata":"\\ud83d')).toBe('0 incomplete');
    expect(parse('runc-state', '{"pid":12')).toBe('0 incomplete');
  });
});

describe('daemon replies (launcher)', () => {
  it('reads ok and refusals in any key order, with other members', () => {
    expect(parse('reply', '{"ok":true}')).toBe('ok');
    expect(parse('reply', '{"fence":true,"controls":{"exec":"enforced"},"ok":true}')).toBe('ok');
    expect(parse('reply', '{"error":"no \\"x\\" \\u00e9","ok":false}')).toBe('refused no "x" é');
    // JSON.stringify writes a lone surrogate as \ud800: shown as U+FFFD, not a broken reply.
    expect(parse('reply', '{"ok":false,"error":"lone \\ud800 \\udc00"}')).toBe('refused lone \ufffd \ufffd');
  });

  it('reads "no fence" (no attach then) only from a yes with a boolean "fence":false', () => {
    expect(parse('reply', '{"ok":true,"fence":false}')).toBe('ok no-fence');
    expect(parse('reply', '{"fence":false,"ok":true}')).toBe('ok no-fence');
    for (const r of [
      '{"ok":true,"fence":true}',
      '{"ok":true,"fence":"false"}',
      '{"ok":true,"fence":0}',
      '{"ok":true,"fence":null}',
      '{"ok":true,"Fence":false}',
    ])
      expect(parse('reply', r), r).toBe('ok');
    expect(parse('reply', '{"ok":false,"fence":false,"error":"no"}')).toBe('refused no');
  });

  it.each([
    ['{"ok":true,garbage', /^malformed/],
    ['{"ok":true} x', /^malformed/],
    ['{"ok":"true"}', /^malformed "ok" is missing/],
    ['{"ok":false}', /^malformed a refusal without/],
    ['{"ok":false,"error":"a\\u0000b"}', /^malformed .*NUL/],
    ['[{"ok":true}]', /^malformed not a JSON object/],
  ])('refuses %s', (input, want) => {
    expect(parse('reply', input)).toMatch(want);
  });
});

describe('config.json (launcher)', () => {
  it('sees cgfence annotations under any spelling runc (Go) accepts, and process.terminal', () => {
    expect(parse('bundle-config', '{"annotations":{"cgfence.io/exec-allow":"/bin/sh"}}')).toBe('annotated=1 terminal=0');
    expect(parse('bundle-config', '{"Annotations":{"cgfence.io/mode":"learn"},"PROCESS":{"Terminal":true}}')).toBe(
      'annotated=1 terminal=1',
    );
    expect(parse('bundle-config', '{"annotations":{"io.kubernetes.x":"y"},"process":{"terminal":false}}')).toBe('annotated=0 terminal=0');
    expect(parse('bundle-config', '{"annotations":[]}')).toMatch(/^error annotations is not an object/);
    expect(parse('bundle-config', '{"annotations":{}} x')).toMatch(/^error/);
  });
});

describe('node hint (launcher)', () => {
  it('needs exactly one complete default_profile line', () => {
    expect(parse('node-hint', '# by the daemon\ndefault_profile=\n')).toBe('none');
    expect(parse('node-hint', 'default_profile=baseline\n')).toBe('profile');
    expect(parse('node-hint', 'default_profile=\ndefault_profile=x\n')).toMatch(/^unknown .*twice/);
    expect(parse('node-hint', 'default_profile=')).toMatch(/^unknown .*not complete/);
    expect(parse('node-hint', '')).toMatch(/^unknown no default_profile/);
    expect(parse('node-hint', 'profile=x\n')).toMatch(/^unknown/);
  });
});
