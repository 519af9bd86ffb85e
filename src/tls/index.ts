export { createSelfSignedCertificate, type CertificateBundle, type SelfSignedOptions } from './self-signed.js';
export { createCa, issueCert, type CaOptions, type IssueOptions, type CertUsage } from './ca.js';
export { fingerprintOfDer, fingerprintOfPem, normaliseFingerprint, fingerprintsEqual } from './fingerprint.js';
