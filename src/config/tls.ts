// The STARTTLS certificate and key (smtp.tls_cert, smtp.tls_key): read and
// checked as a pair, at start, by --check-config and on every SIGHUP, so a
// bad pair is refused before it could replace a working one. Each problem
// names its key and file: "smtp.tls_key: /etc/…/key.pem is not the private
// key of the certificate in /etc/…/cert.pem".
//
// Exports: readTlsPair → the PEM bytes and the certificate's fingerprint, or
// the problems. Never throws. The PEM bytes are returned, never kept here:
// the configuration (printed by --check-config) holds the paths only.
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';

export interface TlsPair {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** SHA-256 fingerprint of the (first) certificate, colon-separated hex as openssl prints it. */
  readonly fingerprint: string;
  /** The certificate's notAfter, as X509Certificate prints it. */
  readonly validTo: string;
}

const why = (err: unknown): string => ((err as Error).message ?? String(err)).split('\n')[0] ?? '';

function readPem(key: string, path: string): Buffer | string {
  try {
    return readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return `${key}: cannot read ${path}${code !== undefined ? ` (${code})` : `: ${why(err)}`}`;
  }
}

export function readTlsPair(certPath: string, keyPath: string): TlsPair | { readonly problems: readonly string[] } {
  const problems: string[] = [];
  const cert = readPem('smtp.tls_cert', certPath);
  const key = readPem('smtp.tls_key', keyPath);
  if (typeof cert === 'string') problems.push(cert);
  if (typeof key === 'string') problems.push(key);
  let x509: X509Certificate | undefined;
  let priv: KeyObject | undefined;
  if (typeof cert !== 'string') {
    try {
      x509 = new X509Certificate(cert);
    } catch (err) {
      problems.push(`smtp.tls_cert: ${certPath} is not a PEM certificate (${why(err)})`);
    }
  }
  if (typeof key !== 'string') {
    try {
      priv = createPrivateKey(key);
    } catch (err) {
      problems.push(`smtp.tls_key: ${keyPath} is not a PEM private key without a passphrase (${why(err)})`);
    }
  }
  if (problems.length > 0 || x509 === undefined || priv === undefined || typeof cert === 'string' || typeof key === 'string') {
    return { problems };
  }
  if (!x509.checkPrivateKey(priv)) return { problems: [`smtp.tls_key: ${keyPath} is not the private key of the certificate in ${certPath}`] };
  try {
    // What OpenSSL itself refuses (a key too small for its security level, a broken chain).
    createSecureContext({ cert, key });
  } catch (err) {
    return { problems: [`smtp.tls_cert: ${certPath} with ${keyPath} is refused by OpenSSL (${why(err)})`] };
  }
  return { cert, key, fingerprint: x509.fingerprint256, validTo: x509.validTo };
}
