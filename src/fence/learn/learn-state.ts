// What learn mode keeps per container in the registry (fences.json): its recorders' key.
// What it has learned so far is in its own file under <stateDir>/learn (learn-backend.ts).
import { JsonFields, definedOnly } from '../json-fields';

export type LearnState = {
  backend?: 'learn';
  /** The container's cgroup id, the recorders' key, decimal. */
  fenceId?: string;
};

export function readLearnState(f: JsonFields): LearnState {
  return definedOnly({ backend: f.optOneOf('backend', ['learn'] as const), fenceId: f.optDecimal('fenceId') });
}
