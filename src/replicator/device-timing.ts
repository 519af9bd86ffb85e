/**
 * Timing of the device calls a sync makes, for the cost model (cost-model.ts): a view of a Device whose `backupTo`,
 * `backupForReading` and `restore` record their duration and the size of the file written or read. Every other member is the device's own.
 * Only durations and sizes are kept, never a file's content or path.
 */
import { stat } from 'node:fs/promises';
import type { DeviceCallTiming } from './cost-model.js';
import type { Device } from './device.js';

export interface DeviceTimings {
  readonly backups: DeviceCallTiming[];
  readonly restores: DeviceCallTiming[];
}

/** `device` with its backups and restores recorded into the returned `timings` (in call order). */
export function timedDevice(device: Device, now: () => number = () => performance.now()): { device: Device; timings: DeviceTimings } {
  const timings: DeviceTimings = { backups: [], restores: [] };
  const size = (file: string) => stat(file).then((s) => s.size, () => 0);
  const timed = (name: 'backupTo' | 'backupForReading' | 'restore', into: DeviceCallTiming[]) => async (file: string, ...rest: unknown[]) => {
    const before = name === 'restore' ? await size(file) : 0;
    const started = now();
    const result: unknown = await (device[name] as (f: string, ...r: unknown[]) => Promise<unknown>).call(device, file, ...rest);
    const seconds = (now() - started) / 1000;
    into.push({ seconds, bytes: name === 'restore' ? before : await size(file) });
    return result;
  };
  const backupTo = timed('backupTo', timings.backups);
  // Its own call of backupTo goes to the device itself (not this view), so it is timed here, once.
  const backupForReading = timed('backupForReading', timings.backups);
  const restore = timed('restore', timings.restores);
  const view = new Proxy(device, {
    get(target, prop) {
      if (prop === 'backupTo') return backupTo;
      if (prop === 'backupForReading') return backupForReading;
      if (prop === 'restore') return restore;
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { device: view, timings };
}
