import { describe, expect, it } from 'vitest';
import { ConfigInvalidError } from '../errors.js';
import { GATEWAY_LIMIT_DEFAULTS } from '../gateway/server.js';
import { DEFAULT_UPSTREAM_CONNECTIONS } from '../gateway/upstream.js';
import { parseConfig } from './parse.js';
import { toYaml, validConfigDoc } from './test-helpers.js';

type Doc = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Parses a variant of the valid document; returns the problems (empty when it parsed). */
function problemsOf(edit: (d: Doc) => void, env: Record<string, string> = {}, opts = {}): string[] {
  const doc = validConfigDoc() as Doc;
  edit(doc);
  try {
    parseConfig(toYaml(doc), env, opts);
    return [];
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigInvalidError);
    return [...(err as ConfigInvalidError).problems];
  }
}

function expectProblem(edit: (d: Doc) => void, expected: string | RegExp) {
  const problems = problemsOf(edit);
  if (typeof expected === 'string') expect(problems).toContain(expected);
  else expect(problems.some((p) => expected.test(p)), problems.join('\n')).toBe(true);
}

describe('parseConfig: valid documents and defaults', () => {
  it('accepts the minimal document and fills in every default', () => {
    const c = parseConfig(toYaml(validConfigDoc()), {});
    expect(c.site).toBe('berlin');
    expect(c.stateDir).toBe('/var/lib/nethsm-replicator');
    expect(c.admin.socket).toBe('/var/lib/nethsm-replicator/admin.sock');
    expect(c.health.listen).toEqual({ host: '127.0.0.1', port: 9810 });
    expect(c.gateway).toBeUndefined();
    expect(c.recovery).toEqual({ retryIntervalMs: 60_000, maxAttempts: Number.POSITIVE_INFINITY });
    expect(c.logging.level).toBe('info');
    expect(c.insecureInline).toBe(false);
    expect(c.namespaces[0]).toMatchObject({ name: 'payments', generate: 'device', maxLagForPromoteMs: 1_800_000 });
    expect(c.nethsm.tls).toEqual({ fingerprint256: Array(32).fill('AB').join(':') });
    expect(c.peers).toEqual([{ name: 'hamburg', url: 'https://replicator.hamburg.example:9443' }]);
    expect(c.peerApi.listen).toEqual({ host: '0.0.0.0', port: 9443 });
    expect(c.replication.directWriters).toBe(false);
    expect(c.replication.afterPrimaryRestart).toBe('stream');
  });

  it('reads replication.afterPrimaryRestart, and refuses another value, naming the path and the choices', () => {
    const doc = validConfigDoc() as Doc;
    doc.replication.afterPrimaryRestart = 'snapshot';
    expect(parseConfig(toYaml(doc), {}).replication.afterPrimaryRestart).toBe('snapshot');
    expectProblem((d) => (d.replication.afterPrimaryRestart = 'full-sync'), /replication\.afterPrimaryRestart.*stream.*snapshot/);
    expectProblem((d) => (d.replication.afterPrimaryRestart = true), /replication\.afterPrimaryRestart/);
  });

  it('reads replication.directWriters, and refuses a value that is not a boolean, naming the path', () => {
    const doc = validConfigDoc() as Doc;
    doc.replication.directWriters = true;
    expect(parseConfig(toYaml(doc), {}).replication.directWriters).toBe(true);
    expectProblem((d) => (d.replication.directWriters = 'yes'), /replication\.directWriters/);
  });

  it('derives the admin socket from a configured stateDir', () => {
    const doc = validConfigDoc();
    doc.stateDir = '/srv/nhr';
    expect(parseConfig(toYaml(doc), {}).admin.socket).toBe('/srv/nhr/admin.sock');
  });

  it('reads the optional root Operator account (transport key unwrap) and refuses a namespaced one', () => {
    const doc = validConfigDoc() as Doc;
    expect(parseConfig(toYaml(doc), {}).nethsm.credentials.operator).toBeUndefined();
    doc.nethsm.credentials.operator = { user: 'replicator-op', passphrase: { file: '/run/credentials/nhr/operator' } };
    const c = parseConfig(toYaml(doc), {});
    expect(c.nethsm.credentials.operator).toEqual({ user: 'replicator-op', passphrase: { kind: 'file', path: '/run/credentials/nhr/operator' } });
    expectProblem((d) => (d.nethsm.credentials.operator = { user: 'payments~op', passphrase: { env: 'O' } }), /operator\.user "payments~op" must be a root user/);
    expectProblem((d) => (d.nethsm.credentials.operator = { user: 'op' }), /nethsm\.credentials\.operator\.passphrase/);
  });

  it('reads optional settings: gateway, metrics account, peer pin, recovery, logging, replicated generation', () => {
    const doc = validConfigDoc() as Doc;
    doc.gateway = { listen: '[::]:8443', certFile: '/etc/gw.crt', keyFile: '/etc/gw.key' };
    doc.health = { listen: '10.0.0.5:9810', tls: { certFile: '/etc/nhr/health.crt', keyFile: '/etc/nhr/health.key' } };
    doc.nethsm.credentials.metrics = { user: 'metrics', passphrase: { env: 'M' } };
    doc.peers[0].tls = { fingerprint256: 'cd'.repeat(32) };
    doc.recovery = { retryInterval: '1m30s', maxAttempts: 5 };
    doc.logging = { level: 'debug' };
    doc.namespaces[0].generate = 'replicated';
    const c = parseConfig(toYaml(doc), {});
    expect(c.gateway?.listen).toEqual({ host: '::', port: 8443 });
    expect(c.health).toEqual({ listen: { host: '10.0.0.5', port: 9810 }, tls: { certFile: '/etc/nhr/health.crt', keyFile: '/etc/nhr/health.key' } });
    expect(c.nethsm.credentials.metrics).toEqual({ user: 'metrics', passphrase: { kind: 'env', name: 'M' } });
    expect(c.peers[0]?.fingerprint256).toBe(Array(32).fill('CD').join(':'));
    expect(c.recovery).toEqual({ retryIntervalMs: 90_000, maxAttempts: 5 });
    expect(c.logging.level).toBe('debug');
    expect(c.namespaces[0]?.generate).toBe('replicated');
  });

  it('returns a deep-frozen object', () => {
    const c = parseConfig(toYaml(validConfigDoc()), {});
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.namespaces)).toBe(true);
    expect(Object.isFrozen(c.namespaces[0]!.replicationUser.passphrase)).toBe(true);
    expect(Object.isFrozen(c.peerApi.listen)).toBe(true);
    expect(() => {
      (c.nethsm as { url: string }).url = 'https://evil.example';
    }).toThrow(TypeError);
  });

  it('reads nethsm.connections (default 32) and refuses a count that is not a whole number in 1..256, naming it', () => {
    expect(parseConfig(toYaml(validConfigDoc()), {}).nethsm.connections).toBe(32);
    const doc = validConfigDoc() as Doc;
    doc.nethsm.connections = 12;
    expect(parseConfig(toYaml(doc), {}).nethsm.connections).toBe(12);
    for (const bad of [0, 2.5, 257, 'many']) expectProblem((d) => (d.nethsm.connections = bad), /nethsm\.connections/);
  });

  it('accepts every TLS trust form for the NetHSM', () => {
    for (const tls of [{ caFile: '/etc/nhr/nethsm-ca.pem' }, { insecure: true }]) {
      const doc = validConfigDoc() as Doc;
      doc.nethsm.tls = tls;
      expect(parseConfig(toYaml(doc), {}).nethsm.tls).toEqual(tls);
    }
  });

  it('resolves relative paths against baseDir', () => {
    const doc = validConfigDoc() as Doc;
    doc.tls.certFile = 'tls/site.crt';
    doc.nethsm.credentials.admin.passphrase = { file: 'secrets/admin' };
    const c = parseConfig(toYaml(doc), {}, { baseDir: '/etc/nethsm-replicator' });
    expect(c.tls.certFile).toBe('/etc/nethsm-replicator/tls/site.crt');
    expect(c.nethsm.credentials.admin.passphrase).toEqual({ kind: 'file', path: '/etc/nethsm-replicator/secrets/admin' });
  });
});

describe('parseConfig: environment expansion', () => {
  it('replaces ${VAR}, applies ${VAR:-fallback} and keeps $$ as $', () => {
    const doc = validConfigDoc() as Doc;
    doc.nethsm.url = 'https://${NETHSM_HOST}:8443';
    doc.stateDir = '${STATE:-/srv/fallback}';
    doc.namespaces[0].replicationUser.passphrase = { file: '${CREDENTIALS_DIRECTORY}/pay$$' };
    const c = parseConfig(toYaml(doc), { NETHSM_HOST: 'hsm1.example', CREDENTIALS_DIRECTORY: '/run/credentials/x' });
    expect(c.nethsm.url).toBe('https://hsm1.example:8443');
    expect(c.stateDir).toBe('/srv/fallback');
    expect(c.namespaces[0]?.replicationUser.passphrase).toEqual({ kind: 'file', path: '/run/credentials/x/pay$' });
  });

  it('names the setting and the variable when a variable is unset', () => {
    const problems = problemsOf((d) => {
      d.nethsm.url = 'https://${NETHSM_HOST}:8443';
    });
    expect(problems).toContain('nethsm.url refers to environment variable NETHSM_HOST, which is not set');
  });

  it('refuses malformed references', () => {
    expect(problemsOf((d) => (d.stateDir = '/srv/${oops'))).toContain(
      'stateDir has a malformed variable reference "${oops" (use ${NAME})',
    );
  });

  it('cannot change the document structure through a variable value', () => {
    const doc = validConfigDoc() as Doc;
    doc.site = '${SITE}';
    const problems = (() => {
      try {
        parseConfig(toYaml(doc), { SITE: 'berlin\nstateDir: /tmp/evil' });
        return [];
      } catch (err) {
        return [...(err as ConfigInvalidError).problems];
      }
    })();
    expect(problems.some((p) => p.startsWith('site "berlin'))).toBe(true);
  });
});

describe('parseConfig: one rule at a time', () => {
  it('requires each mandatory setting, by path', () => {
    expectProblem((d) => (d.peers[1] = { name: 'paris' }), 'peers[1].url is required');
    expectProblem((d) => delete d.site, 'site is required');
    expectProblem((d) => delete d.nethsm.credentials.backup, 'nethsm.credentials.backup is required');
    expectProblem((d) => delete d.tls.keyFile, 'tls.keyFile is required');
    expectProblem((d) => delete d.peerApi, 'peerApi is required');
    expectProblem((d) => delete d.namespaces[0].schedule, 'namespaces[0].schedule is required');
    expectProblem((d) => delete d.replication.backupPassphrase, 'replication.backupPassphrase is required');
  });

  it('refuses unknown settings (typos)', () => {
    expectProblem((d) => (d.nethsm.tsl = {}), 'nethsm.tsl is not a known setting');
    expectProblem((d) => (d.namespaces[0].shedule = '* * * * *'), 'namespaces[0].shedule is not a known setting');
  });

  it('names wrong types', () => {
    expectProblem((d) => (d.peers = 'hamburg'), 'peers must be a list');
    expectProblem((d) => (d.nethsm = 3), 'nethsm must be a mapping');
  });

  it('validates cron expressions with node-cron', () => {
    expectProblem((d) => (d.namespaces[0].schedule = '*/5 * *'), 'namespaces[0].schedule "*/5 * *" is not a valid cron expression');
    expectProblem((d) => (d.namespaces[0].schedule = '61 * * * *'), /schedule "61 \* \* \* \*" is not a valid cron/);
  });

  it('validates durations', () => {
    expectProblem((d) => (d.namespaces[0].maxLagForPromote = '5 minutes'), 'namespaces[0].maxLagForPromote "5 minutes" is not a duration (e.g. 1500ms, 30s, 5m, 1h)');
    expectProblem((d) => (d.recovery = { retryInterval: '0s' }), 'recovery.retryInterval must be longer than 0');
    expectProblem((d) => (d.namespaces[0].maxLagForPromote = 300), 'namespaces[0].maxLagForPromote is a number without a unit: write it with one, e.g. "300s" or "300m" (units: ms, s, m, h)');
    expectProblem((d) => (d.namespaces[0].maxLagForPromote = ['5m']), 'namespaces[0].maxLagForPromote must be a duration such as 1500ms, 30s, 5m or 1h');
  });

  it('validates the recovery attempt limit', () => {
    expectProblem((d) => (d.recovery = { maxAttempts: 0 }), /^recovery\.maxAttempts/);
    expectProblem((d) => (d.recovery = { maxAttempts: 'forever' }), /^recovery\.maxAttempts/);
    const doc = validConfigDoc();
    doc.recovery = { maxAttempts: '${ATTEMPTS}' };
    expect(parseConfig(toYaml(doc), { ATTEMPTS: '7' }).recovery.maxAttempts).toBe(7);
  });

  it('validates listen addresses', () => {
    expectProblem((d) => (d.peerApi.listen = '9443'), 'peerApi.listen "9443" is not a listen address (host:port or [v6]:port)');
    expectProblem((d) => (d.health = { listen: 'localhost:70000' }), /^health\.listen "localhost:70000" is not a listen address/);
  });

  it('refuses two listeners on one address', () => {
    expectProblem((d) => (d.health = { listen: '127.0.0.1:9443' }), 'health.listen 127.0.0.1:9443 conflicts with peerApi.listen 0.0.0.0:9443');
    expectProblem((d) => (d.gateway = { listen: '127.0.0.1:9810', certFile: '/etc/gw.crt', keyFile: '/etc/gw.key' }), 'gateway.listen 127.0.0.1:9810 conflicts with health.listen 127.0.0.1:9810');
  });

  it('allows several port-0 listeners (the OS picks each port)', () => {
    expect(
      problemsOf((d) => {
        d.peerApi.listen = '127.0.0.1:0';
        d.health = { listen: '127.0.0.1:0' };
        d.gateway = { listen: '127.0.0.1:0', certFile: '/etc/gw.crt', keyFile: '/etc/gw.key' };
      }),
    ).toEqual([]);
  });

  it('gives the gateway hold defaults and requires its certificate', () => {
    const doc = validConfigDoc() as Doc;
    doc.gateway = { listen: '127.0.0.1:8443', certFile: '/etc/gw.crt', keyFile: '/etc/gw.key' };
    expect(parseConfig(toYaml(doc), {}).gateway).toEqual({
      listen: { host: '127.0.0.1', port: 8443 },
      certFile: '/etc/gw.crt',
      keyFile: '/etc/gw.key',
      maxHoldMs: 30_000,
      drainTimeoutMs: 60_000,
      forwardToPrimary: false,
      maxWriteBodyBytes: 1024 * 1024,
      writeBodyTimeoutMs: 30_000,
      requestTimeoutMs: 300_000,
      handshakeTimeoutMs: 10_000,
      nethsmConnections: 64,
      routing: 'local-first',
    });
    expectProblem((d) => (d.gateway = { listen: '127.0.0.1:8443' }), 'gateway.certFile is required');
    expectProblem((d) => (d.gateway = { listen: '127.0.0.1:8443', certFile: '/a', keyFile: '/b', maxHold: '0s' }), 'gateway.maxHold must be longer than 0');
  });

  it("reads the gateway's bounds on slow and oversized clients, with the gateway's own defaults", () => {
    const gw = { listen: '127.0.0.1:8443', certFile: '/a', keyFile: '/b' };
    const defaults = parseConfig(toYaml({ ...validConfigDoc(), gateway: gw }), {}).gateway!;
    const { headersTimeoutMs: _head, ...configurable } = GATEWAY_LIMIT_DEFAULTS;
    expect({
      maxWriteBodyBytes: defaults.maxWriteBodyBytes,
      writeBodyTimeoutMs: defaults.writeBodyTimeoutMs,
      requestTimeoutMs: defaults.requestTimeoutMs,
      handshakeTimeoutMs: defaults.handshakeTimeoutMs,
    }).toEqual(configurable);
    const set = { ...gw, maxWriteBodyBytes: 65536, writeBodyTimeout: '5s', requestTimeout: '1m', handshakeTimeout: '2s' };
    expect(parseConfig(toYaml({ ...validConfigDoc(), gateway: set }), {}).gateway).toMatchObject({
      maxWriteBodyBytes: 65536,
      writeBodyTimeoutMs: 5_000,
      requestTimeoutMs: 60_000,
      handshakeTimeoutMs: 2_000,
    });
    expectProblem((d) => (d.gateway = { ...gw, maxWriteBodyBytes: 0 }), /^gateway\.maxWriteBodyBytes /);
    expectProblem((d) => (d.gateway = { ...gw, maxWriteBodyBytes: 2 * 1024 ** 3 }), 'gateway.maxWriteBodyBytes must be at most 1073741824');
    expectProblem((d) => (d.gateway = { ...gw, writeBodyTimeout: '0s' }), 'gateway.writeBodyTimeout must be longer than 0');
    expectProblem((d) => (d.gateway = { ...gw, handshakeTimeout: 'soon' }), /^gateway\.handshakeTimeout "soon" is not a duration/);
    expectProblem(
      (d) => (d.gateway = { ...gw, writeBodyTimeout: '10m' }),
      'gateway.writeBodyTimeout (10m) must not be longer than gateway.requestTimeout (5m)',
    );
  });

  it("reads the size of the gateway's NetHSM pool, with the gateway's own default, and refuses one out of range", () => {
    const gw = { listen: '127.0.0.1:8443', certFile: '/a', keyFile: '/b' };
    expect(parseConfig(toYaml({ ...validConfigDoc(), gateway: gw }), {}).gateway!.nethsmConnections).toBe(DEFAULT_UPSTREAM_CONNECTIONS);
    expect(parseConfig(toYaml({ ...validConfigDoc(), gateway: { ...gw, nethsmConnections: 128 } }), {}).gateway!.nethsmConnections).toBe(128);
    expectProblem((d) => (d.gateway = { ...gw, nethsmConnections: 0 }), 'gateway.nethsmConnections must be at least 1');
    expectProblem((d) => (d.gateway = { ...gw, nethsmConnections: 2.5 }), 'gateway.nethsmConnections must be a whole number');
    expectProblem((d) => (d.gateway = { ...gw, nethsmConnections: 'many' }), 'gateway.nethsmConnections must be a whole number');
    expectProblem((d) => (d.gateway = { ...gw, nethsmConnections: 4096 }), 'gateway.nethsmConnections must be at most 1024');
  });

  it('requires every peer gateway URL when replica writes are forwarded to the primary', () => {
    expectProblem(
      (d) => (d.gateway = { listen: '127.0.0.1:8443', certFile: '/a', keyFile: '/b', forwardToPrimary: true }),
      'peers[0].gatewayUrl is required when gateway.forwardToPrimary is true',
    );
    expect(
      problemsOf((d) => {
        d.gateway = { listen: '127.0.0.1:8443', certFile: '/a', keyFile: '/b', forwardToPrimary: true };
        d.peers[0].gatewayUrl = 'https://gw.hamburg.example:8443';
      }),
    ).toEqual([]);
  });

  it('reads gateway.remoteServing and gateway.routing, with defaults, and names each bad value', () => {
    const gw = { listen: '127.0.0.1:8443', certFile: '/a', keyFile: '/b' };
    const withUrl = (d: Doc) => (d.peers[0].gatewayUrl = 'https://gw.hamburg.example:8443');
    const doc = validConfigDoc() as Doc;
    withUrl(doc);
    doc.gateway = { ...gw, remoteServing: {} };
    const parsed = parseConfig(toYaml(doc), {}).gateway!;
    expect(parsed.remoteServing).toEqual({ maxLagMs: 30_000, recoverAfter: 3, viewTtlMs: 2_000 });
    expect(parsed.routing).toBe('local-first');
    doc.gateway = { ...gw, remoteServing: { maxLag: '45s', recoverAfter: 5, viewTtl: '500ms' }, routing: 'nearest-healthy' };
    const tuned = parseConfig(toYaml(doc), {}).gateway!;
    expect(tuned.remoteServing).toEqual({ maxLagMs: 45_000, recoverAfter: 5, viewTtlMs: 500 });
    expect(tuned.routing).toBe('nearest-healthy');
    expect(parseConfig(toYaml({ ...validConfigDoc(), gateway: gw }), {}).gateway!.remoteServing).toBeUndefined();
    const bad = (patch: Record<string, unknown>) => (d: Doc) => {
      withUrl(d);
      d.gateway = { ...gw, ...patch };
    };
    expectProblem(bad({ routing: 'round-robin' }), /^gateway\.routing /);
    expectProblem(bad({ remoteServing: { maxLag: 'soon' } }), /^gateway\.remoteServing\.maxLag /);
    expectProblem(bad({ remoteServing: { recoverAfter: 0 } }), 'gateway.remoteServing.recoverAfter must be at least 1');
    expectProblem(bad({ remoteServing: { recoverAfter: 1000 } }), 'gateway.remoteServing.recoverAfter must be at most 100');
    expectProblem(bad({ remoteServing: { viewTtl: '0s' } }), 'gateway.remoteServing.viewTtl must be longer than 0');
    expectProblem(bad({ remoteServing: { maxlag: '30s' } }), /^gateway\.remoteServing.*maxlag/);
    expectProblem(
      (d) => (d.gateway = { ...gw, remoteServing: {} }),
      'gateway.remoteServing needs at least one peer with peers[].gatewayUrl (the gateways that serve while this NetHSM is down)',
    );
  });

  it('schedules anti-entropy hourly by default and validates its cron expression', () => {
    expect(parseConfig(toYaml(validConfigDoc()), {}).antiEntropy).toEqual({ schedule: '23 * * * *', maxRequestsPerSecond: 200, certScrubPasses: 8 });
    expectProblem((d) => (d.antiEntropy = { schedule: 'hourly' }), 'antiEntropy.schedule "hourly" is not a valid cron expression');
  });

  it('paces anti-entropy at antiEntropy.maxRequestsPerSecond, a whole number of at least 10', () => {
    const doc = validConfigDoc();
    doc.antiEntropy = { maxRequestsPerSecond: 50 };
    expect(parseConfig(toYaml(doc), {}).antiEntropy).toEqual({ schedule: '23 * * * *', maxRequestsPerSecond: 50, certScrubPasses: 8 });
    expect(problemsOf((d) => (d.antiEntropy = { maxRequestsPerSecond: 5 }))).toEqual(['antiEntropy.maxRequestsPerSecond must be at least 10']);
    expect(problemsOf((d) => (d.antiEntropy = { maxRequestsPerSecond: 'fast' }))).toEqual(['antiEntropy.maxRequestsPerSecond must be a whole number']);
    expect(problemsOf((d) => (d.antiEntropy = { maxRequestsPerSecond: 12.5 }))).toEqual(['antiEntropy.maxRequestsPerSecond must be a whole number']);
  });

  it('scrubs certificates over antiEntropy.certScrubPasses reads, a whole number from 1 to 1000', () => {
    const doc = validConfigDoc();
    doc.antiEntropy = { certScrubPasses: 24 };
    expect(parseConfig(toYaml(doc), {}).antiEntropy.certScrubPasses).toBe(24);
    expect(problemsOf((d) => (d.antiEntropy = { certScrubPasses: 0 }))).toEqual(['antiEntropy.certScrubPasses must be at least 1']);
    expect(problemsOf((d) => (d.antiEntropy = { certScrubPasses: 1001 }))).toEqual(['antiEntropy.certScrubPasses must be at most 1000']);
    expect(problemsOf((d) => (d.antiEntropy = { certScrubPasses: 2.5 }))).toEqual(['antiEntropy.certScrubPasses must be a whole number']);
  });

  it('requires unique peer names distinct from this site', () => {
    expectProblem((d) => d.peers.push({ name: 'hamburg', url: 'https://x.example' }), 'peers[1].name "hamburg" is already used by peers[0]');
    expectProblem((d) => (d.peers[0].name = 'berlin'), 'peers[0].name "berlin" is this site\'s own name (site)');
    expectProblem((d) => (d.peers[0].name = 'nethsm'), 'peers[0].name "nethsm" is reserved for this site\'s NetHSM; name the peer after its site');
  });

  it('validates site and peer names by the NetHSM id rule', () => {
    expectProblem((d) => (d.site = 'bad site'), /^site "bad site" is not a valid site name/);
    expectProblem((d) => (d.peers[0].name = '-x'), /^peers\[0\]\.name "-x" is not a valid site name/);
  });

  it('validates namespace names by the NetHSM id rule and requires them unique', () => {
    expectProblem((d) => (d.namespaces[0].name = 'pay~ments'), /^namespaces\[0\]\.name "pay~ments" is not a valid namespace name/);
    expectProblem((d) => d.namespaces.push({ ...d.namespaces[0] }), 'namespaces[1].name "payments" is already used by namespaces[0]');
  });

  it('requires every namespace primary to be this site or a peer', () => {
    expectProblem((d) => (d.namespaces[0].primary = 'paris'), 'namespaces[0].primary "paris" is neither this site ("berlin") nor one of the peers');
    expect(problemsOf((d) => (d.namespaces[0].primary = 'hamburg'))).toEqual([]);
  });

  it('keeps replication users inside their namespace and root accounts at root', () => {
    expectProblem(
      (d) => (d.namespaces[0].replicationUser.user = 'other~replicator'),
      'namespaces[0].replicationUser.user "other~replicator" belongs to namespace "other", not "payments"',
    );
    expectProblem((d) => (d.namespaces[0].replicationUser.user = 'replicator'), /replicationUser\.user "replicator" must be a namespace user/);
    expectProblem((d) => (d.nethsm.credentials.backup.user = 'payments~backup'), /backup\.user "payments~backup" must be a root user/);
  });

  it('requires https URLs without credentials, and never echoes URL credentials', () => {
    expectProblem((d) => (d.nethsm.url = 'http://nethsm:8443'), 'nethsm.url "http://nethsm:8443" must be an https:// URL');
    expectProblem((d) => (d.peers[0].url = 'not a url'), 'peers[0].url "not a url" is not a URL');
    const problems = problemsOf((d) => (d.nethsm.url = 'https://admin:hunter2@nethsm:8443'));
    expect(problems).toContain('nethsm.url must not carry credentials');
    expect(problems.join('\n')).not.toContain('hunter2');
  });

  it('requires exactly one TLS trust for the NetHSM and well-formed fingerprints', () => {
    expectProblem((d) => (d.nethsm.tls = {}), 'nethsm.tls must have exactly one of caFile, fingerprint256 or insecure: true');
    expectProblem((d) => (d.nethsm.tls = { insecure: true, caFile: '/x' }), 'nethsm.tls must have exactly one of caFile, fingerprint256 or insecure: true');
    expectProblem((d) => (d.nethsm.tls = { insecure: false }), /^nethsm\.tls\.insecure/);
    expectProblem((d) => (d.peers[0].tls = { fingerprint256: 'AB:CD' }), 'peers[0].tls.fingerprint256 "AB:CD" is not a SHA-256 fingerprint (32 hex bytes, e.g. AB:CD:…)');
  });

  it('refuses inline secrets without echoing them', () => {
    const problems = problemsOf((d) => (d.nethsm.credentials.admin.passphrase = 'correct horse battery staple'));
    expect(problems).toEqual([
      'nethsm.credentials.admin.passphrase must be a secret reference ({ file: <path> } or { env: <NAME> }), not an inline value (inline secrets need the top-level insecureInline: true, for demos and tests only)',
    ]);
    expect(problems.join('\n')).not.toContain('horse');
  });

  it('accepts inline secrets under insecureInline: true, keeping them out of serialisation', () => {
    const doc = validConfigDoc() as Doc;
    doc.insecureInline = true;
    doc.replication.passphrase = 'correct horse battery staple';
    const c = parseConfig(toYaml(doc), {});
    expect(c.insecureInline).toBe(true);
    expect(c.replication.passphrase.kind).toBe('inline');
    expect((c.replication.passphrase as { value: string }).value).toBe('correct horse battery staple');
    expect(JSON.stringify(c)).not.toContain('horse');
  });

  it('validates secret reference shapes', () => {
    expectProblem((d) => (d.replication.passphrase = { file: '/a', env: 'B' }), 'replication.passphrase must have exactly one of file or env');
    expectProblem((d) => (d.replication.passphrase = { env: '1BAD' }), 'replication.passphrase.env must be an environment variable name');
    expectProblem((d) => (d.replication.passphrase = { file: 'relative' }), 'replication.passphrase.file must be an absolute path');
    expectProblem((d) => (d.replication.passphrase = ['x']), 'replication.passphrase must be { file: <path> } or { env: <NAME> }');
  });

  it('refuses relative paths when no base directory is known', () => {
    expectProblem((d) => (d.tls.certFile = 'site.crt'), 'tls.certFile must be an absolute path');
  });

  it('validates the log level and the generate mode', () => {
    expectProblem((d) => (d.logging = { level: 'loud' }), /^logging\.level must be one of "fatal"/);
    expectProblem((d) => (d.namespaces[0].generate = 'sometimes'), 'namespaces[0].generate must be one of "device", "replicated"');
  });

  it('refuses an admin socket path longer than a unix socket can hold', () => {
    expectProblem((d) => (d.stateDir = '/' + 'x'.repeat(120)), /^stateDir is too long for the admin socket/);
    expectProblem((d) => (d.admin = { socket: '/' + 'y'.repeat(120) }), /^admin\.socket is 121 bytes long/);
  });

  it('collects every problem, not just the first', () => {
    const problems = problemsOf((d) => {
      delete d.site;
      d.peers[0].url = 'http://x';
      d.namespaces[0].schedule = 'never';
      d.namespaces[0].primary = 'paris';
    });
    expect(problems).toHaveLength(4);
  });
});

describe('parseConfig: the document itself', () => {
  it('reports YAML syntax errors, empty files, non-mappings and duplicate keys', () => {
    const msg = (text: string) => {
      try {
        parseConfig(text, {});
        return '';
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigInvalidError);
        return (err as Error).message;
      }
    };
    expect(msg('site: [unclosed')).toMatch(/line 1: not valid YAML: /);
    expect(msg('')).toMatch(/config is empty/);
    expect(msg('- a\n- b\n')).toMatch(/must be a mapping/);
    expect(msg('site: a\nsite: b\n')).toContain('- line 2: setting "site" is given twice in the same mapping; keep one');
    expect(msg('site: a\nnamespaces:\n  - name: x\n    "name": y\n')).toContain('- line 4: setting "name" is given twice in the same mapping; keep one');
  });

  it('names the source file in the message and the error path', () => {
    try {
      parseConfig('site: 3', {}, { source: '/etc/nethsm-replicator/config.yaml' });
      expect.unreachable();
    } catch (err) {
      expect((err as ConfigInvalidError).message).toMatch(/^\/etc\/nethsm-replicator\/config\.yaml is invalid \(\d+ problems\):/);
      expect((err as ConfigInvalidError).path).toBe('/etc/nethsm-replicator/config.yaml');
    }
  });
});

describe('parseConfig: etcd and automatic failover', () => {
  const withEtcd = (d: Doc) => (d.etcd = { endpoints: ['http://127.0.0.1:2379', 'http://127.0.0.1:2381', 'http://127.0.0.1:2383'] });

  it('defaults to manual failover and no etcd', () => {
    const c = parseConfig(toYaml(validConfigDoc()), {});
    expect(c.namespaces[0]!.failover).toBe('manual');
    expect(c.etcd).toBeUndefined();
  });

  it('reads the etcd section with its defaults and a namespace with automatic failover', () => {
    const doc = validConfigDoc() as Doc;
    withEtcd(doc);
    doc.namespaces[0].failover = 'automatic';
    const c = parseConfig(toYaml(doc), {});
    expect(c.namespaces[0]!.failover).toBe('automatic');
    expect(c.etcd).toEqual({ endpoints: doc.etcd.endpoints, prefix: '/nethsm-replicator', leaseTtlMs: 10_000, safetyMarginMs: 3_000 });
    doc.etcd = { endpoints: ['https://etcd.witness.example:2379'], prefix: '/nhr/prod', leaseTtl: '6s', safetyMargin: '2s', tls: { caFile: '/etc/nhr/etcd-ca.crt', certFile: '/etc/nhr/etcd.crt', keyFile: '/etc/nhr/etcd.key' } };
    expect(parseConfig(toYaml(doc), {}).etcd).toMatchObject({ prefix: '/nhr/prod', leaseTtlMs: 6_000, safetyMarginMs: 2_000, tls: { caFile: '/etc/nhr/etcd-ca.crt' } });
  });

  it('refuses automatic failover without etcd, naming the namespace', () => {
    expectProblem((d) => (d.namespaces[0].failover = 'automatic'), 'namespaces[0].failover "automatic" needs the etcd section (etcd.endpoints): the leader key lives there');
    expectProblem((d) => (d.namespaces[0].failover = 'sometimes'), /namespaces\[0\]\.failover/);
  });

  it('refuses bad endpoints, prefixes, lease and margin', () => {
    expectProblem((d) => (d.etcd = { endpoints: [] }), /etcd\.endpoints must have at least 1/);
    expectProblem((d) => (d.etcd = { endpoints: ['grpc://x:2379'] }), /etcd\.endpoints\[0\].*https:\/\//);
    expectProblem((d) => (d.etcd = { endpoints: ['https://x'] }), /etcd\.endpoints\[0\].*must name the port/);
    expectProblem((d) => (d.etcd = { endpoints: ['https://u:p@x:2379'] }), /etcd\.endpoints\[0\].*credentials/);
    expectProblem((d) => (d.etcd = { endpoints: ['https://x:2379', 'http://y:2379'] }), 'etcd.endpoints mix http:// and https://; use one scheme for every member');
    expectProblem((d) => (withEtcd(d), (d.etcd.prefix = 'nhr')), /etcd\.prefix.*must start with \//);
    expectProblem((d) => (withEtcd(d), (d.etcd.leaseTtl = '1500ms')), /etcd\.leaseTtl \(1500ms\) must be a whole number of seconds, at least 2s/);
    expectProblem((d) => (withEtcd(d), (d.etcd.leaseTtl = '1s')), /etcd\.leaseTtl \(1s\)/);
    expectProblem((d) => (withEtcd(d), (d.etcd.safetyMargin = '6s')), /etcd\.safetyMargin \(6s\) must be at most half of etcd\.leaseTtl \(10s\)/);
    expectProblem((d) => (withEtcd(d), (d.etcd.tls = { caFile: '/ca', certFile: '/c' })), 'etcd.tls.certFile and etcd.tls.keyFile go together (client certificate and its key)');
    expectProblem((d) => (withEtcd(d), (d.etcd.bogus = 1)), /etcd.*bogus/);
  });
});
