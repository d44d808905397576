//! JWT verification.
//!
//! The accepted algorithms follow from the configured keys, never from the token: an HMAC
//! secret accepts HS256/384/512, an RSA public key RS*/PS*, an EC key ES256/384, an Ed25519
//! key EdDSA, and a JWKS file each key's own algorithm. A token whose header names anything
//! else is refused before any signature check, so `alg: none` and the "HS256 signed with the
//! RSA public key" confusion cannot pass (jsonwebtoken also refuses a key of the wrong family).

use std::collections::HashSet;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use wshub_protocol::ErrorCode;

use super::Permissions;
use crate::config::AuthConfig;
use crate::ids::ClientId;

/// Who a connection is and what it may do.
#[derive(Debug, Clone)]
pub struct Identity {
    pub client_id: ClientId,
    pub permissions: Permissions,
    /// `exp` of the token, Unix seconds; `None` for anonymous clients and tokens without one.
    pub expires_at: Option<u64>,
    /// From a verified token (as opposed to anonymous).
    pub authenticated: bool,
    /// The token's `info` claim (shown in presence).
    pub info: Option<serde_json::Value>,
}

impl Identity {
    pub fn anonymous(client_id: ClientId, permissions: Permissions) -> Self {
        Identity {
            client_id,
            permissions,
            expires_at: None,
            authenticated: false,
            info: None,
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl TokenError {
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Expired => ErrorCode::TokenExpired,
            TokenError::Invalid(_) => ErrorCode::InvalidToken,
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    info: Option<serde_json::Value>,
}

struct VerifyKey {
    kid: Option<String>,
    key: DecodingKey,
    /// The key's algorithms and the configured claim rules, built once: a `Validation` is a
    /// handful of allocations (sets of claim names, issuers), and a node verifies a token
    /// for every connection.
    validation: Validation,
}

/// Verifies tokens against the configured keys and claims rules.
pub struct Verifier {
    keys: Vec<VerifyKey>,
    issuer: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .finish()
    }
}

/// What a token verified with a key of these `algorithms` must satisfy: `exp` (required
/// when `auth.require_exp`), `nbf`, and `iss`/`aud` when configured, with `auth.leeway`.
fn claim_rules(algorithms: Vec<Algorithm>, cfg: &AuthConfig) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.algorithms = algorithms;
    validation.leeway = cfg.leeway.as_secs();
    validation.validate_nbf = true;
    validation.validate_exp = true;
    let mut required: HashSet<String> = HashSet::new();
    if cfg.require_exp {
        required.insert("exp".into());
    }
    if !cfg.issuer.is_empty() {
        validation.set_issuer(&[&cfg.issuer]);
        required.insert("iss".into());
    }
    if cfg.audience.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&[&cfg.audience]);
        required.insert("aud".into());
    }
    validation.required_spec_claims = required;
    validation
}

impl Verifier {
    /// Builds the verifier, reading `public_key_file` and `jwks_file`. Errors name the key.
    pub fn from_config(cfg: &AuthConfig) -> Result<Verifier, String> {
        let mut keys = Vec::new();
        if !cfg.secret_key.is_empty() {
            keys.push(VerifyKey {
                kid: None,
                key: DecodingKey::from_secret(cfg.secret_key.as_bytes()),
                validation: claim_rules(
                    vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
                    cfg,
                ),
            });
        }
        if !cfg.public_key_file.is_empty() {
            let pem = std::fs::read(&cfg.public_key_file)
                .map_err(|e| format!("auth.public_key_file: {}: {e}", cfg.public_key_file))?;
            let (key, algorithms) = public_key(&pem)
                .map_err(|e| format!("auth.public_key_file: {}: {e}", cfg.public_key_file))?;
            keys.push(VerifyKey {
                kid: None,
                key,
                validation: claim_rules(algorithms, cfg),
            });
        }
        if !cfg.jwks_file.is_empty() {
            let text = std::fs::read_to_string(&cfg.jwks_file)
                .map_err(|e| format!("auth.jwks_file: {}: {e}", cfg.jwks_file))?;
            let set: JwkSet = serde_json::from_str(&text)
                .map_err(|e| format!("auth.jwks_file: {}: not a JWK set: {e}", cfg.jwks_file))?;
            for jwk in &set.keys {
                // KeyAlgorithm and Algorithm share their names ("RS256", ...).
                let Some(alg) = jwk
                    .common
                    .key_algorithm
                    .and_then(|a| a.to_string().parse::<Algorithm>().ok())
                else {
                    return Err(format!(
                        "auth.jwks_file: {}: every key needs a supported \"alg\"",
                        cfg.jwks_file
                    ));
                };
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| format!("auth.jwks_file: {}: {e}", cfg.jwks_file))?;
                keys.push(VerifyKey {
                    kid: jwk.common.key_id.clone(),
                    key,
                    validation: claim_rules(vec![alg], cfg),
                });
            }
        }
        if cfg.enabled && keys.is_empty() {
            return Err(
                "auth: auth.enabled needs a key: auth.secret_key, auth.public_key_file or auth.jwks_file"
                    .into(),
            );
        }
        Ok(Verifier {
            keys,
            issuer: cfg.issuer.clone(),
        })
    }

    /// Checks the signature, `exp`, `nbf`, `iss`, `aud`; returns who the token is for.
    ///
    /// Error texts go back to the client: they name what is wrong, never quote the token.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| TokenError::Invalid(format!("malformed: {}", describe(e.kind()))))?;
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| k.validation.algorithms.contains(&header.alg))
            .filter(|k| match (&k.kid, &header.kid) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            })
            .peekable();
        if candidates.peek().is_none() {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let mut last = TokenError::Invalid("no key matched".into());
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation) {
                Ok(data) => return identity(data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::ExpiredSignature => return Err(TokenError::Expired),
                        K::InvalidSignature => TokenError::Invalid("bad signature".into()),
                        K::ImmatureSignature => {
                            return Err(TokenError::Invalid("not valid yet (nbf)".into()));
                        }
                        K::InvalidIssuer => return Err(TokenError::Invalid("wrong issuer".into())),
                        K::InvalidAudience => {
                            return Err(TokenError::Invalid("wrong audience".into()));
                        }
                        K::MissingRequiredClaim(c) => {
                            return Err(TokenError::Invalid(format!("missing claim {c}")));
                        }
                        other => TokenError::Invalid(describe(other)),
                    };
                }
            }
        }
        Err(last)
    }
}

/// Why a token was refused, without quoting it (a JSON error's text would).
fn describe(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::Json(json) => wshub_protocol::json_error::describe(json),
        ErrorKind::Base64(_) => "not base64url".into(),
        ErrorKind::Utf8(_) => "not UTF-8".into(),
        ErrorKind::InvalidToken => "not a JWT (header.payload.signature)".into(),
        other => format!("{other:?}"),
    }
}

fn identity(claims: Claims) -> Result<Identity, TokenError> {
    let id = claims
        .user_id
        .filter(|s| !s.is_empty())
        .or(claims.sub.filter(|s| !s.is_empty()))
        .ok_or_else(|| TokenError::Invalid("no user_id or sub claim".into()))?;
    if id.len() > 256 || id.chars().any(char::is_control) {
        return Err(TokenError::Invalid(
            "user id is too long or has control characters".into(),
        ));
    }
    Ok(Identity {
        client_id: ClientId::from(id),
        permissions: Permissions::parse_lenient(&claims.permissions),
        expires_at: claims.exp,
        authenticated: true,
        info: claims.info,
    })
}

/// A PEM public key of any supported family, and the algorithms it verifies.
fn public_key(pem: &[u8]) -> Result<(DecodingKey, Vec<Algorithm>), String> {
    use Algorithm::*;
    let (key, algorithms) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        (k, vec![RS256, RS384, RS512, PS256, PS384, PS512])
    } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        (k, vec![ES256, ES384])
    } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        (k, vec![EdDSA])
    } else {
        return Err("not an RSA, EC or Ed25519 public key in PEM".into());
    };
    Ok((key, algorithms))
}
