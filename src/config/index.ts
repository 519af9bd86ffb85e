export { parseConfig, type ParseConfigOptions } from './parse.js';
export { loadConfigFile, withServiceCredentials, SERVICE_CREDENTIALS_DIR } from './load.js';
export { loadSecrets, type Credential, type LoadedSecrets, type SecretFileReader } from './secrets.js';
export {
  DEFAULT_CONFIG_PATH,
  DEFAULT_STATE_DIR,
  DEFAULT_HEALTH_LISTEN,
  type ReplicatorConfig,
  type NamespaceConfig,
  type PeerConfig,
  type NetHsmTrust,
  type LogLevel,
} from './schema.js';
export type { SecretRef, AccountRef } from './secret-ref.js';
export { parseDuration, tryParseDuration, formatDuration } from './duration.js';
export { parseListenAddress, formatListenAddress, type ListenAddress } from './listen.js';
