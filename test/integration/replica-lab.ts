/**
 * A lab of two sites for tests of a replica's recoveries: a primary of one namespace and b its replica, b's log
 * captured (primary-restart.test.ts, older-primary.test.ts).
 */
import type { AfterPrimaryRestart } from '../../src/config/schema.js';
import { capturingLogger } from '../../src/gateway/test-support.js';
import { Lab, type LabSite } from '../../src/lab/lab.js';
import { silentLogger } from '../../src/log.js';
import { streamReady } from './stream-helpers.js';

export interface LoggedLine {
  msg: string;
  namespace?: string;
  missing?: number;
  differs?: number;
  repaired?: number;
}

export interface ReplicaLab {
  lab: Lab;
  a: LabSite;
  b: LabSite;
  /** b's log lines whose message matches `msg`, parsed. */
  logged: (msg: RegExp) => LoggedLine[];
}

/**
 * Starts a (primary of `namespace`) and then b (its replica, `afterPrimaryRestart` as given, the retry interval 200 ms),
 * runs `beforeReplica` between the two starts, waits for both transport keys and, unless `sync` is false, syncs b once
 * (its verification drained). The caller closes `lab`.
 */
export async function replicaLab(o: {
  namespace: string;
  afterPrimaryRestart?: AfterPrimaryRestart | undefined;
  gateway?: boolean;
  sync?: boolean;
  beforeReplica?: (a: LabSite) => void;
}): Promise<ReplicaLab> {
  let lines: string[] = [];
  const lab = await Lab.create({
    namespaces: [{ name: o.namespace, primary: 'a' }],
    retryInterval: '200ms',
    ...(o.gateway ? { gateway: true } : {}),
    logger: (site) => {
      if (site !== 'b') return silentLogger;
      const c = capturingLogger();
      lines = c.lines;
      return c.logger;
    },
  });
  const [a, b] = [lab.site('a'), lab.site('b')];
  if (o.afterPrimaryRestart) b.config = { ...b.config, replication: { ...b.config.replication, afterPrimaryRestart: o.afterPrimaryRestart } };
  await a.startDaemon();
  o.beforeReplica?.(a);
  await b.startDaemon();
  await lab.settle();
  await streamReady([a, b]);
  if (o.sync !== false) {
    await b.daemon!.syncer.sync(o.namespace, { actor: 'test' });
    // Its verification (a device backup) runs on after the answer: over before a test counts backups.
    await b.daemon!.syncer.drain();
  }
  const logged = (msg: RegExp) => lines.map((l) => JSON.parse(l) as LoggedLine).filter((l) => msg.test(l.msg));
  return { lab, a, b, logged };
}
