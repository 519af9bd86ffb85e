/**
 * The conformance suite against the real firmware, `nitrokey/nethsm:testing`, started by testcontainers.
 * Skipped, saying why, when no Docker engine is reachable (the check is quick and never pulls anything).
 */
import { existsSync } from 'node:fs';
import { connect, type TLSSocket } from 'node:tls';
import { describe, it } from 'vitest';
import { fingerprintOfDer } from '../../src/tls/fingerprint.js';
import { runConformance, type ConformanceTarget } from './suite.js';
import { runEncodingsConformance } from './encodings.js';
import { runSystemTlsConformance } from './system-tls.js';

const IMAGE = 'docker.io/nitrokey/nethsm:testing';

/** Why the firmware cannot be run here, or undefined when a Docker engine answers. */
async function dockerUnavailable(): Promise<string | undefined> {
  if (process.env.NHR_SKIP_FIRMWARE) return 'NHR_SKIP_FIRMWARE is set';
  if (!process.env.DOCKER_HOST && !existsSync('/var/run/docker.sock')) {
    return 'no Docker engine (DOCKER_HOST unset and /var/run/docker.sock absent)';
  }
  try {
    const { getContainerRuntimeClient } = await import('testcontainers');
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no answer within 10 s')), 10_000).unref());
    await Promise.race([getContainerRuntimeClient(), timeout]);
    return undefined;
  } catch (err) {
    return `Docker engine not reachable: ${err instanceof Error ? err.message : String(err)}`;
  }
}

/** The server certificate's SHA-256 fingerprint, read once over a raw TLS connection, so the suite can pin it. */
function peerFingerprint(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket: TLSSocket = connect({ host, port, rejectUnauthorized: false }, () => {
      const raw = socket.getPeerCertificate().raw;
      socket.end();
      resolve(fingerprintOfDer(raw));
    });
    socket.on('error', reject);
  });
}

const unavailable = await dockerUnavailable();
if (unavailable) {
  console.warn(`skipping the firmware conformance run (${IMAGE}): ${unavailable}`);
  describe.skip(`NetHSM conformance: firmware ${IMAGE} (skipped: ${unavailable})`, () => {
    it('runs the conformance suite against the real firmware', () => undefined);
  });
} else {
  /** A fresh container (each suite needs its own Unprovisioned device). */
  const startFirmware = async (): Promise<ConformanceTarget> => {
    const container = await startContainer();
    const host = container.getHost();
    const port = container.getMappedPort(8443);
    const fingerprint256 = await peerFingerprint(host, port);
    let stopped = false;
    return {
      url: `https://${host}:${port}`,
      tls: { fingerprint256 },
      close: async () => {
        if (stopped) return;
        stopped = true;
        await container.stop();
      },
    };
  };
  runConformance(`firmware ${IMAGE}`, startFirmware);
  runEncodingsConformance(`firmware ${IMAGE}`, startFirmware);

  runSystemTlsConformance(`firmware ${IMAGE}`, async () => {
    const container = await startContainer();
    const urlOf = () => `https://${container.getHost()}:${container.getMappedPort(8443)}`;
    let url = urlOf();
    let stopped = false;
    return {
      url: () => url,
      // keyfender exits on reboot, shutdown and commit and the container idles without an API: restarting the same
      // container (its /data kept) is the power button. The mapped port may change.
      powerCycle: () => async () => {
        await container.restart();
        url = urlOf();
      },
      close: async () => {
        if (stopped) return;
        stopped = true;
        await container.stop();
      },
    };
  });
}

/** A fresh Unprovisioned firmware container, answering on 8443. */
async function startContainer() {
  const { GenericContainer, Wait } = await import('testcontainers');
  return new GenericContainer(IMAGE)
    .withExposedPorts(8443)
    .withWaitStrategy(Wait.forHttp('/api/v1/health/state', 8443).usingTls().allowInsecure().forStatusCode(200))
    .withStartupTimeout(120_000)
    .start();
}
