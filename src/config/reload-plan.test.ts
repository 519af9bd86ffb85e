import { describe, expect, it } from 'vitest';
import { parseConfig } from './parse.js';
import { planReload } from './reload-plan.js';
import { toYaml, validConfigDoc } from './test-helpers.js';

type Doc = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const parse = (edit: (d: Doc) => void = () => undefined) => {
  const doc = validConfigDoc() as Doc;
  edit(doc);
  return parseConfig(toYaml(doc), {});
};

describe('planReload', () => {
  it('changes nothing for the same file', () => {
    const plan = planReload(parse(), parse());
    expect(plan.changed).toEqual([]);
    expect(plan.restartNeededFor).toEqual([]);
    expect(plan.effective).toEqual(parse());
  });

  it('applies the NetHSM trust, peer pins, schedules and log level', () => {
    const running = parse();
    const next = parse((d) => {
      d.nethsm.tls = { fingerprint256: 'cd'.repeat(32) };
      d.peers[0].tls = { fingerprint256: 'ef'.repeat(32) };
      d.namespaces[0].schedule = '*/5 * * * *';
      d.antiEntropy = { schedule: '0 * * * *', certScrubPasses: 3 };
      d.replication.afterPrimaryRestart = 'snapshot';
      d.logging = { level: 'debug' };
    });
    const plan = planReload(running, next);
    expect(plan.changed.sort()).toEqual([
      'antiEntropy.certScrubPasses',
      'antiEntropy.schedule',
      'logging.level',
      'namespaces[0].schedule',
      'nethsm.tls',
      'peers[0].tls.fingerprint256',
      'replication.afterPrimaryRestart',
    ]);
    expect(plan.restartNeededFor).toEqual([]);
    expect(plan.effective).toEqual(next);
  });

  it('names what only a restart applies, in the file\'s words, and keeps running with the old values for those', () => {
    const running = parse();
    const next = parse((d) => {
      d.peerApi.listen = '0.0.0.0:9444';
      d.namespaces[0].maxLagForPromote = '1h';
      d.nethsm.credentials.admin.passphrase = { file: '/run/credentials/nhr/admin2' };
      d.recovery = { retryInterval: '30s' };
      d.namespaces[0].schedule = '*/5 * * * *';
      d.antiEntropy = { maxRequestsPerSecond: 50 };
    });
    const plan = planReload(running, next);
    expect(plan.restartNeededFor.sort()).toEqual([
      'antiEntropy.maxRequestsPerSecond',
      'namespaces[0].maxLagForPromote',
      'nethsm.credentials.admin.passphrase',
      'peerApi.listen',
      'recovery.retryInterval',
    ]);
    expect(plan.changed).toEqual(['namespaces[0].schedule']);
    expect(plan.effective.peerApi).toEqual(running.peerApi);
    // The limiter is built at start: the running rate stays until a restart.
    expect(plan.effective.antiEntropy.maxRequestsPerSecond).toBe(running.antiEntropy.maxRequestsPerSecond);
    expect(plan.effective.namespaces[0]!.maxLagForPromoteMs).toBe(running.namespaces[0]!.maxLagForPromoteMs);
    expect(plan.effective.namespaces[0]!.schedule).toBe('*/5 * * * *');
  });

  it('takes a peer or namespace added or removed as a restart of the whole list, still applying the pins of the others', () => {
    const running = parse();
    const next = parse((d) => {
      d.peers.push({ name: 'munich', url: 'https://replicator.munich.example:9443' });
      d.peers[0].tls = { fingerprint256: 'ef'.repeat(32) };
    });
    const plan = planReload(running, next);
    expect(plan.restartNeededFor).toEqual(['peers']);
    expect(plan.changed).toEqual(['peers[0].tls.fingerprint256']);
    expect(plan.effective.peers.map((p) => p.name)).toEqual(['hamburg']);
  });

  it('sees an unpinned peer and a changed inline secret', () => {
    const running = parse((d) => {
      d.peers[0].tls = { fingerprint256: 'ef'.repeat(32) };
    });
    const next = parse();
    expect(planReload(running, next).changed).toEqual(['peers[0].tls.fingerprint256']);
    expect(planReload(running, next).effective.peers[0]).not.toHaveProperty('fingerprint256');
    const inline = (pw: string) =>
      parse((d) => {
        d.insecureInline = true;
        d.replication.passphrase = pw;
      });
    expect(planReload(inline('one-passphrase'), inline('another-passphrase')).restartNeededFor).toEqual(['replication.passphrase']);
  });
});
