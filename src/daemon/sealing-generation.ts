/**
 * The snapshot key ring's record across restarts (src/replicator/snapshot-keys.ts, `GenerationRecord`), kept in the
 * state database (`snapshot_sealing_generation`, migration 008): a restarted primary resumes the salt its replicas hold
 * keys for. Public values only (salt, scrypt parameters, birth, use count); the key never leaves the ring.
 *
 * Contract: a bad stored row is ignored with a warning (the ring seals under a fresh salt, whose first recorded use
 * replaces the row); a closed store reads as no record. A failed write is logged and rethrown: the ring then stops
 * using that key after the snapshot (so no use goes uncounted for more than one snapshot).
 */
import type { Logger } from '../log.js';
import type { GenerationRecord } from '../replicator/snapshot-keys.js';
import type { StateStore } from '../state/store.js';

export function sealingGenerationRecord(store: StateStore, log: Logger): GenerationRecord {
  return {
    load() {
      if (!store.isOpen) return undefined;
      try {
        const read = store.sealingGeneration.get();
        if (read && 'invalid' in read) {
          log.warn({ problem: read.invalid }, 'the recorded snapshot sealing generation is not valid: ignored, snapshots are sealed under a fresh salt (its first use replaces the record)');
          return undefined;
        }
        return read?.generation;
      } catch (err) {
        log.warn({ err }, 'could not read the recorded snapshot sealing generation: snapshots are sealed under a fresh salt');
        return undefined;
      }
    },
    save(g) {
      try {
        store.sealingGeneration.put(g);
      } catch (err) {
        log.warn({ err }, 'could not record the snapshot sealing generation: its key is retired after this snapshot');
        throw err;
      }
    },
  };
}
