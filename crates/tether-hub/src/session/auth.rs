//! Connection tokens: JWT signed with HS256 (a shared secret) or RS256 (the issuer's RSA
//! key; we hold the public half), checked with the `jsonwebtoken` crate.
//!
//! Claims: `sub` (the user, required), `exp` (expiry, seconds since the epoch, optional:
//! without it the token does not expire), `channels` (optional list: the only channels the
//! connection may use).

use crate::hub::Access;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Who a token says the client is, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user (`sub`).
    pub user: String,
    /// What the connection may do.
    pub access: Access,
    /// When the token expires (`exp`), if it does.
    pub expires: Option<SystemTime>,
}

/// Whether two secrets (API keys, static tokens) are equal, in a time that does not tell
/// how much of a guess was right.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a token was refused. Front-ends map it to their codes ([`crate::codes::auth_code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    /// Whether the token was valid but has expired.
    pub expired: bool,
    /// What is wrong, for the client.
    pub message: String,
}

impl AuthError {
    /// A refused token (not an expired one).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { expired: false, message: message.into() }
    }
}

/// Decides who a token belongs to.
pub trait Authenticator: Send + Sync {
    /// Checks a token.
    ///
    /// # Errors
    ///
    /// An [`AuthError`]: invalid, or expired.
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError>;
}

/// Refuses every token (no key configured): only anonymous clients.
#[derive(Debug, Default)]
pub struct NoTokens;

impl Authenticator for NoTokens {
    fn authenticate(&self, _token: &str) -> Result<Identity, AuthError> {
        Err(AuthError::invalid("this server accepts no tokens (no token key configured)"))
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: Option<u64>,
    channels: Option<Vec<String>>,
}

/// JWT checks with an HMAC secret (HS256) and/or an RSA public key (RS256).
pub struct Jwt {
    keys: Vec<(Algorithm, DecodingKey)>,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algs: Vec<Algorithm> = self.keys.iter().map(|(a, _)| *a).collect();
        f.debug_struct("Jwt").field("algorithms", &algs).finish()
    }
}

impl Jwt {
    /// Checks tokens with `hmac_secret` (HS256) and/or `rsa_public_pem` (RS256).
    ///
    /// # Errors
    ///
    /// A message when neither is given, the secret is shorter than 32 bytes, or the PEM is
    /// not an RSA public key.
    pub fn new(hmac_secret: Option<&[u8]>, rsa_public_pem: Option<&[u8]>) -> Result<Self, String> {
        let mut keys = Vec::new();
        if let Some(secret) = hmac_secret {
            if secret.len() < 32 {
                return Err("the token HMAC secret must be at least 32 bytes".into());
            }
            keys.push((Algorithm::HS256, DecodingKey::from_secret(secret)));
        }
        if let Some(pem) = rsa_public_pem {
            let key =
                DecodingKey::from_rsa_pem(pem).map_err(|e| format!("not an RSA public key in PEM: {e}"))?;
            keys.push((Algorithm::RS256, key));
        }
        if keys.is_empty() {
            return Err("no token key given".into());
        }
        Ok(Self { keys })
    }
}

impl Authenticator for Jwt {
    fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::invalid(format!("invalid token: {e}")))?;
        let Some((alg, key)) = self.keys.iter().find(|(a, _)| *a == header.alg) else {
            return Err(AuthError::invalid(format!(
                "invalid token: algorithm {:?} not accepted",
                header.alg
            )));
        };
        let mut validation = Validation::new(*alg);
        validation.leeway = 0;
        validation.required_spec_claims.clear();
        validation.required_spec_claims.insert("sub".into());
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError { expired: true, message: "token expired".to_owned() },
            _ => AuthError::invalid(format!("invalid token: {e}")),
        })?;
        let claims = data.claims;
        Ok(Identity {
            user: claims.sub,
            access: Access { anonymous: false, channels: claims.channels.map(Vec::into_boxed_slice) },
            expires: claims.exp.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        })
    }
}
