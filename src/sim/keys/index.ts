/** The simulator's key model and cryptography (pure, no HTTP). See the brief's `src/sim/keys/` interface. */
export * from './types.js';
export { encodeKeyRecord, decodeKeyRecord } from './record.js';
export { generateKey, generateKeyAsync } from './generate.js';
export { importKeyJson, importKeyPem } from './import.js';
export { publicKeyView, publicKeyPem, tagsAllow } from './view.js';
export { sign, decrypt, encrypt } from './ops.js';
export { generateId } from './material.js';
export { csr } from './csr.js';
