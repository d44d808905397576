// HS256 JWTs signed with node:crypto, for claims `wshub token` cannot produce.

import { createHmac } from 'node:crypto';

const b64url = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

export function signHs256(claims, secret) {
  const head = b64url({ alg: 'HS256', typ: 'JWT' });
  const body = b64url(claims);
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

/** A token for `user` with `perms`, valid for `ttlSeconds`, issuer GoHub's default. */
export function token(secret, user, perms, ttlSeconds = 3600, extra = {}) {
  const now = Math.floor(Date.now() / 1000);
  return signHs256({ user_id: user, sub: user, permissions: perms, iss: 'gohub', iat: now, exp: now + ttlSeconds, ...extra }, secret);
}

/** The claims of a token (no verification). */
export function claims(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
}
