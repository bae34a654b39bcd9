// STARTTLS policy of the SMTP listener: what protocol versions and ciphers a
// client may use. TLS 1.2 at least; forward-secret AEAD suites only (ECDHE
// with AES-GCM or ChaCha20-Poly1305 for TLS 1.2; TLS 1.3's own suites), the
// server's order first. No RSA key exchange, CBC, SHA-1 MACs, 3DES or RC4:
// every MTA of the last decade (Postfix, Exim, OpenSMTPD, Microsoft's, Google's)
// speaks one of these. DHE is left out: it needs DH parameters we would have
// to ship and rotate, and nothing that can do DHE-GCM lacks ECDHE-GCM.
//
// Exports: TLS_POLICY (options for node:tls createSecureContext, merged over
// the certificate and key by server.ts). Pure.
import type { SecureContextOptions } from 'node:tls';

const TLS13_SUITES = ['TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256', 'TLS_AES_128_GCM_SHA256'];
const TLS12_SUITES = [
  'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305',
  'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256',
];

export const TLS_POLICY: Readonly<Pick<SecureContextOptions, 'minVersion' | 'ciphers' | 'honorCipherOrder'>> = Object.freeze({
  minVersion: 'TLSv1.2',
  ciphers: [...TLS13_SUITES, ...TLS12_SUITES].join(':'),
  honorCipherOrder: true,
});
