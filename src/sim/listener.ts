/**
 * The simulator's HTTPS listener: one `https.Server` that can stop (power off: no longer listening, every connection
 * dropped, so clients see "connection refused") and listen again on the same host and port (power on), and whose
 * certificate can be replaced while it runs: new connections get the new identity at once, open ones keep theirs
 * (as the firmware's new TLS listener does, FACTS-system §2.3).
 */
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { servedCertificatesPem, type TlsIdentity } from './tls-identity.js';

export class SimListener {
  private readonly server: https.Server;
  private listening = false;
  /** The bound port; fixed after the first start so a power cycle comes back where it was. */
  port: number;

  constructor(
    handler: (req: IncomingMessage, res: ServerResponse) => void,
    identity: TlsIdentity,
    readonly host: string,
    port: number,
  ) {
    this.port = port;
    this.server = https.createServer({ cert: servedCertificatesPem(identity), key: identity.keyPem }, handler);
  }

  get isListening(): boolean {
    return this.listening;
  }

  /** Serves `identity` to every new TLS connection. */
  setIdentity(identity: TlsIdentity): void {
    this.server.setSecureContext({ cert: servedCertificatesPem(identity), key: identity.keyPem });
  }

  /** Starts listening. Rejects when the port is taken (e.g. grabbed by another process while powered off). */
  async start(): Promise<void> {
    if (this.listening) return;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, this.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.port = (this.server.address() as AddressInfo).port;
    this.listening = true;
  }

  /** Stops listening and drops every connection, finished or not. Idempotent. */
  async stop(): Promise<void> {
    if (!this.listening) return;
    this.listening = false;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }
}
