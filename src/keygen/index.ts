/** Replicated key generation: validate a `POST /keys/generate` body as the NetHSM would, generate, build the import body. */
export { generateForImport, generateForImportAsync, type GeneratedKey } from './generate.js';
export { parseGenerateRequest, parseGenerateRequestBytes, type GenerateRequest } from './request.js';
export { base64Bytes, importBodyBytes } from './import-body.js';
