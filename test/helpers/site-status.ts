/**
 * What an operator sees of a lab site: its `status` (as the CLI renders it, and its exit code) over the admin socket,
 * and JSON answers of its health listener (`/health/ready`, `/replica/<ns>`, …).
 */
import { request } from 'node:http';
import { AdminClient } from '../../src/admin/client.js';
import { parseDaemonStatus, renderStatus, statusExitCode } from '../../src/cli/status.js';
import type { DaemonStatus } from '../../src/daemon/status.js';
import type { LabSite } from '../../src/lab/lab.js';

/** GET `path` on the health listener at `port` (plain HTTP on 127.0.0.1): its status code and JSON body. */
export function getJson(port: number, path: string): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The site's daemon status: parsed as `status --json` gives it, rendered as `status` prints it, and the exit code. */
export async function statusOf(site: LabSite): Promise<{ status: DaemonStatus; text: string; code: number }> {
  const status = parseDaemonStatus(await new AdminClient({ socketPath: site.config.admin.socket }).status());
  return { status, text: renderStatus(status), code: statusExitCode(status) };
}
