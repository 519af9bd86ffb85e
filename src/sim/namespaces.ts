/**
 * Namespaces as the firmware stores them: `/namespace/<ns>` sealed with the namespace store key, value the JSON string `"<ns>"`.
 */
import type { Device } from './device.js';

export function namespacePath(ns: string): string {
  return `/namespace/${ns}`;
}

export class NamespaceStore {
  constructor(private readonly device: Device) {}

  exists(ns: string): boolean {
    return this.device.kv.has(namespacePath(ns));
  }

  create(ns: string): void {
    this.device.setSealed(namespacePath(ns), 'namespace_store', Buffer.from(JSON.stringify(ns), 'utf8'));
  }

  delete(ns: string): boolean {
    return this.device.kv.delete(namespacePath(ns));
  }

  list(): string[] {
    return this.device.kv
      .pathsUnder('/namespace/')
      .map((p) => p.slice('/namespace/'.length))
      .filter((id) => !id.startsWith('.') && !id.includes('/'))
      .sort();
  }
}
