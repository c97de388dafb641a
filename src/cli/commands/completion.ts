// `cgfence completion bash`: a bash completion script, generated from one table of the
// commands, their verbs, their flags and the values a flag takes.
import { AUDIT_TYPES } from '../../audit/audit-record';
import { UsageError, parseArgs } from '../args';
import { OUTPUT_FORMATS } from '../output';

export const help = `usage: cgfence completion bash

Prints a bash completion script for cgfence: commands, verbs, flags, and the values of
-o, --type, --cgroup-mode and --fail-mode. Load it with
  source <(cgfence completion bash)
or install it with
  cgfence completion bash > /etc/bash_completion.d/cgfence`;

interface CommandCompletion {
  verbs?: string[];
  flags: string[];
}

const OUT = ['-o', '--output', '--json'];

/** Every command's verbs and flags (test/cli.test.ts checks each flag is accepted). */
export const COMPLETION: Record<string, CommandCompletion> = {
  daemon: {
    flags: [
      '--containerd-socket',
      '--state-dir',
      '--audit-log',
      '--socket',
      '--cgroup-mode',
      '--pin-dir',
      '--fail-mode',
      '--metrics-address',
      '--spool-dir',
      '--config',
    ],
  },
  status: { flags: [...OUT, '--utc', '--socket'] },
  ps: { flags: [...OUT, '--utc', '--socket'] },
  audit: {
    verbs: ['verify'],
    flags: [...OUT, '--utc', '--follow', '--container', '--namespace', '--type', '--action', '--since', '--tail', '--audit-log'],
  },
  policy: {
    verbs: ['check', 'set'],
    flags: ['--config', '--file', '--pod-namespace', '--pod-labels', '--namespace', '--socket', '--json'],
  },
  learn: { flags: ['--namespace', '--prefix-len4', '--prefix-len6', '--json', '--socket', '--audit-log'] },
  sandbox: { verbs: ['up', 'down', 'status'], flags: [...OUT, '--dir', '--config'] },
  install: { flags: ['--runc-path', '--runc-conf', '--runc-conf-from'] },
  uninstall: {
    flags: ['--socket', '--pin-dir', '--state-dir', '--spool-dir', '--runc-path', '--runc-conf', '--audit-log', '--force', '--dry-run'],
  },
  demo: { flags: ['--dir', '--keep'] },
  completion: { verbs: ['bash'], flags: [] },
};

const VALUES: Record<string, string[]> = {
  '-o': [...OUTPUT_FORMATS],
  '--output': [...OUTPUT_FORMATS],
  '--type': [...AUDIT_TYPES],
  '--cgroup-mode': ['auto', 'v2', 'v1'],
  '--fail-mode': ['closed', 'open'],
};
const FILES = [
  '--audit-log',
  '--config',
  '--file',
  '--socket',
  '--dir',
  '--state-dir',
  '--pin-dir',
  '--spool-dir',
  '--containerd-socket',
  '--runc-path',
  '--runc-conf',
  '--runc-conf-from',
];

export function bashCompletion(): string {
  const cases = Object.entries(COMPLETION)
    .map(
      ([cmd, c]) =>
        `    ${cmd}) verbs=${JSON.stringify((c.verbs ?? []).join(' '))}; flags=${JSON.stringify([...c.flags, '--help'].join(' '))} ;;`,
    )
    .join('\n');
  const values = Object.entries(VALUES)
    .map(([f, v]) => `    ${f}) COMPREPLY=($(compgen -W ${JSON.stringify(v.join(' '))} -- "$cur")); return ;;`)
    .join('\n');
  return `# bash completion for cgfence (cgfence completion bash)
_cgfence() {
  local cur prev cmd verbs flags
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  if [[ $COMP_CWORD -eq 1 ]]; then
    COMPREPLY=($(compgen -W ${JSON.stringify([...Object.keys(COMPLETION), '--help', '--version'].join(' '))} -- "$cur"))
    return
  fi
  case "$prev" in
${values}
    ${FILES.join('|')}) COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
  cmd="\${COMP_WORDS[1]}"
  case "$cmd" in
${cases}
    *) return ;;
  esac
  if [[ $COMP_CWORD -eq 2 && -n "$verbs" && "$cur" != -* ]]; then
    COMPREPLY=($(compgen -W "$verbs" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
  fi
}
complete -F _cgfence cgfence
`;
}

export async function run(argv: string[]): Promise<number> {
  const a = parseArgs(argv, {});
  if (a.bools.has('help')) {
    console.log(help);
    return 0;
  }
  if (a.positionals[0] !== 'bash' || a.positionals.length !== 1) {
    throw new UsageError(
      `expected \`cgfence completion bash\`${a.positionals[0] ? `, not ${JSON.stringify(a.positionals.join(' '))} (bash is the one shell supported)` : ''}`,
    );
  }
  process.stdout.write(bashCompletion());
  return 0;
}
