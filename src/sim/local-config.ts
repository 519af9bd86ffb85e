/**
 * Device-local network config as the firmware keeps it (FACTS-system §4.2): when `ip-config` is missing or unreadable,
 * reading it writes the default (`192.168.1.1/24`, no gateway) into the store and returns it. The firmware does this
 * at boot too, so even an Unprovisioned device has `/local/<id>/config/ip-config`.
 */
import { decodeLog, decodeNetwork, DEFAULT_LOG, DEFAULT_NETWORK, encodeNetwork, type LogConfig, type NetworkConfig } from './config-encodings.js';
import type { Device } from './device.js';

/** The stored network config; writes and returns the default when absent or unreadable. */
export function readNetworkConfig(device: Device): NetworkConfig {
  let stored: Buffer | undefined;
  try {
    stored = device.getLocal('ip-config');
  } catch {
    stored = undefined; // sealed for another device key: unreadable
  }
  const decoded = stored === undefined ? undefined : decodeNetwork(stored);
  if (decoded !== undefined) return decoded;
  device.setLocal('ip-config', encodeNetwork(DEFAULT_NETWORK));
  return DEFAULT_NETWORK;
}

/** The stored logging config, or the default when absent or unreadable (not written, unlike the network's). */
export function readLogConfig(device: Device): LogConfig {
  try {
    const stored = device.getLocal('log-config');
    return (stored && decodeLog(stored)) ?? DEFAULT_LOG;
  } catch {
    return DEFAULT_LOG; // sealed for another device key
  }
}
