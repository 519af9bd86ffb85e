/**
 * One mutex per namespace, after the change capture's key locks and the device barrier in the lock order
 * (docs/concurrency.md): taken only while the device barrier is already held (or for work that never touches the
 * device), never the other way round. It orders what
 * the barrier does not: a namespace's snapshot apply and the recording of its position against its stream applies
 * and anti-entropy passes.
 */
import { Mutex } from '../util/mutex.js';

/** One lock per namespace, created on first use. */
export function namespaceLocks(): (namespace: string) => Mutex {
  const locks = new Map<string, Mutex>();
  return (ns) => {
    let m = locks.get(ns);
    if (!m) locks.set(ns, (m = new Mutex()));
    return m;
  };
}
