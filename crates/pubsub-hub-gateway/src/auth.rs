//! Connection and subscription tokens: JWTs signed with HS256 (the configured HMAC secret)
//! or RS256 (the configured RSA public key), with the claims Centrifugo defines.
//!
//! Connection token claims: `sub` (the user id; empty means anonymous), `exp` (Unix
//! seconds; optional), `info` (any JSON, shown to others as the connection's info) and
//! `channels` (server-side subscriptions made at connect). Subscription token claims:
//! `sub` (must equal the connection's user), `channel` (must equal the channel) and `exp`.
//!
//! Expiry is checked here rather than by the JWT library so that an expired but otherwise
//! valid token gets the protocol's "token expired" (which makes the SDKs fetch a new one)
//! and a forged one gets "invalid token".

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::config::GatewayConfig;

/// The claims of a connection token.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ConnectionClaims {
    /// The user id.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: Option<u64>,
    /// Connection info.
    pub info: Option<Box<RawValue>>,
    /// Channels to subscribe the connection to at connect time.
    pub channels: Vec<String>,
}

/// The claims of a subscription token.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SubscriptionClaims {
    /// The user id; must match the connection's.
    pub sub: String,
    /// The channel; must match the subscribed one.
    pub channel: String,
    /// Expiry, Unix seconds.
    pub exp: Option<u64>,
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is well-formed and correctly signed, but expired.
    Expired,
    /// No key is configured for tokens.
    NoKey,
    /// Bad signature, algorithm, format or claims; the reason, for logs.
    Invalid(String),
}

/// The keys tokens are checked with.
#[derive(Clone)]
pub(crate) struct TokenVerifier {
    hmac: Option<DecodingKey>,
    rsa: Option<DecodingKey>,
}

impl TokenVerifier {
    /// Reads the keys from the configuration; an unreadable RSA key is an error.
    pub(crate) fn new(config: &GatewayConfig) -> Result<Self, String> {
        let hmac = config
            .hmac_secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.expose().as_bytes()));
        let rsa = match &config.rsa_public_key {
            Some(pem) => Some(
                DecodingKey::from_rsa_pem(pem.as_bytes())
                    .map_err(|e| format!("rsa_public_key is not a PEM RSA public key: {e}"))?,
            ),
            None => None,
        };
        Ok(TokenVerifier { hmac, rsa })
    }

    /// Whether any key is configured.
    pub(crate) fn has_key(&self) -> bool {
        self.hmac.is_some() || self.rsa.is_some()
    }

    fn verify<T: DeserializeOwned>(&self, token: &str) -> Result<(T, Option<u64>), TokenError> {
        if !self.has_key() {
            return Err(TokenError::NoKey);
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hmac.as_ref(),
            Algorithm::RS256 => self.rsa.as_ref(),
            other => return Err(TokenError::Invalid(format!("algorithm {other:?} refused"))),
        }
        .ok_or_else(|| TokenError::Invalid(format!("no key for {:?}", header.alg)))?;
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<serde_json::Value>(token, key, &validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let exp = match data.claims.get("exp") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| TokenError::Invalid("exp is not a number".into()))?,
            ),
        };
        if let Some(exp) = exp
            && exp <= now_secs()
        {
            return Err(TokenError::Expired);
        }
        let claims =
            serde_json::from_value(data.claims).map_err(|e| TokenError::Invalid(e.to_string()))?;
        Ok((claims, exp))
    }

    /// Checks a connection token.
    pub(crate) fn connection(&self, token: &str) -> Result<ConnectionClaims, TokenError> {
        self.verify::<ConnectionClaims>(token).map(|(c, _)| c)
    }

    /// Checks a subscription token for `user` on `channel`.
    pub(crate) fn subscription(
        &self,
        token: &str,
        user: &str,
        channel: &str,
    ) -> Result<SubscriptionClaims, TokenError> {
        let (claims, _) = self.verify::<SubscriptionClaims>(token)?;
        if claims.sub != user {
            return Err(TokenError::Invalid(
                "the token's sub is not the connection's user".into(),
            ));
        }
        if claims.channel != channel {
            return Err(TokenError::Invalid(
                "the token is for another channel".into(),
            ));
        }
        Ok(claims)
    }
}

/// Now, in Unix seconds.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds from now until `exp` (at least 1), for `ttl` fields.
pub(crate) fn ttl_until(exp: u64) -> u32 {
    exp.saturating_sub(now_secs()).clamp(1, u64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    fn sign(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(&GatewayConfig::default().with_hmac_secret("s3cret")).unwrap()
    }

    #[test]
    fn a_valid_token_gives_its_claims() {
        let token = sign(
            json!({"sub": "alice", "exp": now_secs() + 60, "info": {"n": 1}, "channels": ["a"]}),
            "s3cret",
        );
        let claims = verifier().connection(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.channels, vec!["a".to_owned()]);
        assert_eq!(claims.info.unwrap().get(), r#"{"n":1}"#);
    }

    #[test]
    fn expired_forged_and_keyless_tokens_are_told_apart() {
        let expired = sign(json!({"sub": "a", "exp": now_secs() - 1}), "s3cret");
        assert_eq!(
            verifier().connection(&expired).unwrap_err(),
            TokenError::Expired
        );
        let forged = sign(json!({"sub": "a"}), "other");
        assert!(matches!(
            verifier().connection(&forged),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            verifier().connection("not.a.jwt"),
            Err(TokenError::Invalid(_))
        ));
        let none = TokenVerifier::new(&GatewayConfig::default()).unwrap();
        assert_eq!(
            none.connection(&sign(json!({}), "x")).unwrap_err(),
            TokenError::NoKey
        );
    }

    #[test]
    fn rs256_tokens_are_checked_with_the_public_key() {
        let private = include_str!("../tests/fixtures/rs256-test-private.pem");
        let public = include_str!("../tests/fixtures/rs256-test-public.pem");
        let config = GatewayConfig::default()
            .with_hmac_secret("s3cret")
            .with_rsa_public_key(public);
        let with_rsa = TokenVerifier::new(&config).unwrap();
        let key = EncodingKey::from_rsa_pem(private.as_bytes()).unwrap();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &json!({"sub": "rsa-user"}),
            &key,
        )
        .unwrap();
        assert_eq!(with_rsa.connection(&token).unwrap().sub, "rsa-user");
        // HS256 still works beside it, and an HS256 token signed with the public key's
        // text (the classic algorithm confusion) does not.
        assert!(
            with_rsa
                .connection(&sign(json!({"sub": "h"}), "s3cret"))
                .is_ok()
        );
        assert!(
            with_rsa
                .connection(&sign(json!({"sub": "h"}), public))
                .is_err()
        );
        // Without an RSA key, RS256 is refused.
        assert!(matches!(
            verifier().connection(&token),
            Err(TokenError::Invalid(_))
        ));
        let bad = GatewayConfig::default().with_rsa_public_key("not a key");
        assert!(matches!(TokenVerifier::new(&bad), Err(e) if e.contains("rsa_public_key")));
    }

    #[test]
    fn a_subscription_token_is_bound_to_user_and_channel() {
        let token = sign(json!({"sub": "bob", "channel": "secret:1"}), "s3cret");
        assert!(verifier().subscription(&token, "bob", "secret:1").is_ok());
        assert!(verifier().subscription(&token, "eve", "secret:1").is_err());
        assert!(verifier().subscription(&token, "bob", "secret:2").is_err());
    }
}
