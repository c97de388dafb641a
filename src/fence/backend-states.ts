// Each backend's per-container state, by backend name: the type of FencedContainer.backends
// and of AttachContext.state. Each control declares its own state (and how it is read back
// from fences.json) in its own folder; this file only puts them side by side.
import { ExecState, readExecState } from './exec/exec-state';
import { JsonFields } from './json-fields';
import { LearnState, readLearnState } from './learn/learn-state';
import { NetworkState, readNetworkState } from './network/network-state';
import { SeccompState, readSeccompState } from './seccomp/seccomp-state';

export type { ExecState, ExecAllowEntry } from './exec/exec-state';
export type { LearnState } from './learn/learn-state';
export type { NetworkState } from './network/network-state';
export type { SeccompState } from './seccomp/seccomp-state';

export interface BackendStates {
  exec: ExecState;
  network: NetworkState;
  seccomp: SeccompState;
  learn: LearnState;
}

/** The state of each backend that holds something for a container. */
export type BackendStateMap = { [N in keyof BackendStates]?: BackendStates[N] };

const READERS: { [N in keyof BackendStates]: (f: JsonFields) => BackendStates[N] } = {
  exec: readExecState,
  network: readNetworkState,
  seccomp: readSeccompState,
  learn: readLearnState,
};

/**
 * A container's backend states as read back from fences.json, each checked by its control's
 * reader (a wrong field throws, naming it). `ignored` gets the names of backends this version
 * does not have (a newer daemon's): they are left out, the others kept.
 */
export function readBackendStates(f: JsonFields, ignored: (name: string) => void): BackendStateMap {
  const out: BackendStateMap = {};
  for (const name of f.keys()) {
    if (!Object.hasOwn(READERS, name)) {
      ignored(name);
      continue;
    }
    setBackendState(out, name as keyof BackendStates, READERS[name as keyof BackendStates](f.obj(name)));
  }
  return out;
}

/** Sets one backend's state: the key and the value's type go together. */
export function setBackendState<N extends keyof BackendStates>(states: BackendStateMap, name: N, state: BackendStates[N]): void {
  (states as Record<N, BackendStates[N]>)[name] = state;
}
