//! JSON Web Key Sets (RFC 7517): the public keys an identity provider signs tokens with, and
//! the choice of the key that verifies one token.
//!
//! Only signature keys of the kinds the API verifies are kept: RSA of at least 2048 bits
//! (RS256/384/512, PS256/384/512), EC P-256 (ES256) and P-384 (ES384), and Ed25519 (EdDSA).
//! Symmetric (`oct`) keys are never taken from a JWKS: HS256 uses `jwt_secret` only, so a
//! published key can never become an HMAC secret. Keys marked for encryption (`use`, `key_ops`)
//! or of other kinds are skipped, not fatal: providers publish such keys beside signing keys.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// The smallest RSA modulus accepted (NIST SP 800-57: 1024-bit keys are broken by now).
pub const MIN_RSA_BITS: usize = 2048;

/// Why a document is not a usable JWKS. The text names no key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JwksError(pub String);

/// Why no key verifies a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMiss {
    /// No key fits the token's `kid` and `alg`: a fresher copy of the JWKS might have one.
    Unknown,
    /// The token names no `kid` and several keys fit its `alg`.
    Ambiguous,
}

/// The usable signing keys of a JWKS.
#[derive(Clone)]
pub struct Jwks {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| (&k.kid, k.kind)).collect();
        f.debug_struct("Jwks").field("keys", &kids).finish()
    }
}

#[derive(Clone)]
struct Key {
    kid: Option<String>,
    /// The key's own `alg`, when it names one: then only that algorithm may use it.
    alg: Option<Algorithm>,
    kind: KeyKind,
    decoding: DecodingKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    /// RFC 7518 section 3.1 and RFC 8037 section 3.1: which key type each algorithm needs.
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Self::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::P256 => alg == ES256,
            Self::P384 => alg == ES384,
            Self::Ed25519 => alg == EdDSA,
        }
    }
}

impl Jwks {
    /// Parses a JWK set (`{"keys": [...]}`) or a single JWK. Keys that cannot verify
    /// signatures are skipped; a set left without any is an error.
    pub fn parse(json: &[u8]) -> Result<Self, JwksError> {
        let value: Value = serde_json::from_slice(json)
            .map_err(|e| JwksError(format!("the JWKS is not JSON ({e})")))?;
        let entries = match &value {
            Value::Object(object) => match object.get("keys") {
                Some(Value::Array(keys)) => keys.iter().collect(),
                Some(_) => return Err(JwksError("\"keys\" is not an array".to_owned())),
                None if object.contains_key("kty") => vec![&value],
                None => return Err(JwksError("the JWKS has no \"keys\" array".to_owned())),
            },
            _ => return Err(JwksError("the JWKS is not a JSON object".to_owned())),
        };
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (index, entry) in entries.into_iter().enumerate() {
            match Key::parse(entry) {
                Ok(key) => keys.push(key),
                Err(why) => skipped.push(format!("key {index}: {why}")),
            }
        }
        if keys.is_empty() {
            let why = if skipped.is_empty() {
                "the set is empty".to_owned()
            } else {
                skipped.join("; ")
            };
            return Err(JwksError(format!(
                "the JWKS has no usable signing key ({why})"
            )));
        }
        Ok(Self { keys })
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true: a parsed set holds at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key that verifies a token signed with `alg` under `kid`. With a `kid`, the first
    /// key of that id fitting `alg`; without one, the only key fitting `alg`.
    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&DecodingKey, KeyMiss> {
        let fits = |key: &&Key| key.kind.fits(alg) && key.alg.is_none_or(|own| own == alg);
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|key| key.kid.as_deref() == Some(kid))
                .find(fits)
                .map(|key| &key.decoding)
                .ok_or(KeyMiss::Unknown),
            None => {
                let mut fitting = self.keys.iter().filter(fits);
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Ok(&key.decoding),
                    (None, _) => Err(KeyMiss::Unknown),
                    (Some(_), Some(_)) => Err(KeyMiss::Ambiguous),
                }
            }
        }
    }
}

impl Key {
    fn parse(entry: &Value) -> Result<Self, String> {
        let text = |name: &str| entry.get(name).and_then(Value::as_str);
        if let Some(usage) = text("use")
            && usage != "sig"
        {
            return Err(format!("its use is {usage:?}, not \"sig\""));
        }
        if let Some(ops) = entry.get("key_ops").and_then(Value::as_array)
            && !ops.iter().any(|op| op == "verify")
        {
            return Err("its key_ops lack \"verify\"".to_owned());
        }
        let alg =
            match text("alg") {
                None => None,
                Some(name) => Some(name.parse::<Algorithm>().map_err(|_| {
                    format!("its alg {name:?} is not a supported signature algorithm")
                })?),
            };
        let jwk: Jwk = serde_json::from_value(entry.clone())
            .map_err(|e| format!("it is not a valid JWK ({e})"))?;
        let kind = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let bits = modulus_bits(&rsa.n).ok_or("its modulus is not base64url")?;
                if bits < MIN_RSA_BITS {
                    return Err(format!(
                        "its RSA modulus has {bits} bits, fewer than {MIN_RSA_BITS}"
                    ));
                }
                KeyKind::Rsa
            }
            AlgorithmParameters::EllipticCurve(ec) => {
                let (kind, size) = match ec.curve {
                    EllipticCurve::P256 => (KeyKind::P256, 32),
                    EllipticCurve::P384 => (KeyKind::P384, 48),
                    ref other => return Err(format!("its curve {other:?} is not supported")),
                };
                if decoded_len(&ec.x) != Some(size) || decoded_len(&ec.y) != Some(size) {
                    return Err("its coordinates do not fit its curve".to_owned());
                }
                kind
            }
            AlgorithmParameters::OctetKeyPair(okp) => {
                if okp.curve != EllipticCurve::Ed25519 {
                    return Err(format!("its curve {:?} is not supported", okp.curve));
                }
                if decoded_len(&okp.x) != Some(32) {
                    return Err("its public key is not 32 bytes".to_owned());
                }
                KeyKind::Ed25519
            }
            AlgorithmParameters::OctetKey(_) => {
                return Err("symmetric keys are not taken from a JWKS".to_owned());
            }
            _ => return Err("its key type is not supported".to_owned()),
        };
        if let Some(alg) = alg
            && !kind.fits(alg)
        {
            return Err(format!("its alg {alg:?} does not fit a {kind:?} key"));
        }
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable ({e})"))?;
        Ok(Self {
            kid: jwk.common.key_id,
            alg,
            kind,
            decoding,
        })
    }
}

fn decoded_len(b64: &str) -> Option<usize> {
    URL_SAFE_NO_PAD.decode(b64).ok().map(|bytes| bytes.len())
}

/// The size in bits of a base64url big-endian modulus, leading zero bytes ignored.
fn modulus_bits(n: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(n).ok()?;
    let significant = bytes
        .iter()
        .position(|b| *b != 0)
        .map_or(&[][..], |i| &bytes[i..]);
    Some(match significant.first() {
        None => 0,
        Some(first) => significant.len() * 8 - first.leading_zeros() as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A well-formed RSA public key of `bits` bits (not a real key pair: parsing and selection
    /// only look at the shape).
    fn rsa_jwk(kid: &str, bits: usize) -> Value {
        let mut n = vec![0xffu8; bits / 8];
        n[0] = 0xc5;
        json!({"kty": "RSA", "kid": kid, "n": URL_SAFE_NO_PAD.encode(&n), "e": "AQAB"})
    }

    fn ec_jwk(kid: &str) -> Value {
        let c = URL_SAFE_NO_PAD.encode([7u8; 32]);
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": c, "y": c})
    }

    fn ed_jwk(kid: &str) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": URL_SAFE_NO_PAD.encode([9u8; 32])})
    }

    fn parse(value: Value) -> Result<Jwks, JwksError> {
        Jwks::parse(value.to_string().as_bytes())
    }

    #[test]
    fn a_set_keeps_the_signing_keys_and_skips_the_rest() {
        let jwks = parse(json!({"keys": [
            rsa_jwk("rsa", 2048),
            ec_jwk("ec"),
            ed_jwk("ed"),
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "noverify", "key_ops": ["encrypt"], "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"},
            {"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": "AA"},
            {"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
            rsa_jwk("small", 1024),
            "not an object",
        ]}))
        .expect("a usable set");
        assert_eq!(jwks.len(), 3);
        assert!(jwks.select(Some("rsa"), Algorithm::RS256).is_ok());
        assert!(jwks.select(Some("ec"), Algorithm::ES256).is_ok());
        assert!(jwks.select(Some("ed"), Algorithm::EdDSA).is_ok());
        for kid in ["hmac", "noverify", "enc", "p521", "x25519", "oaep", "small"] {
            for alg in [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256] {
                assert_eq!(
                    jwks.select(Some(kid), alg).err(),
                    Some(KeyMiss::Unknown),
                    "{kid}"
                );
            }
        }
    }

    #[test]
    fn a_single_jwk_is_a_set_of_one() {
        let jwks = parse(ed_jwk("only")).expect("one key");
        assert_eq!(jwks.len(), 1);
    }

    #[test]
    fn documents_without_a_usable_key_are_errors() {
        let cases = [
            ("not json", b"<html>".to_vec(), "the JWKS is not JSON"),
            ("array", b"[]".to_vec(), "the JWKS is not a JSON object"),
            (
                "no keys",
                br#"{"issuer":"x"}"#.to_vec(),
                "the JWKS has no \"keys\" array",
            ),
            (
                "keys not array",
                br#"{"keys":{}}"#.to_vec(),
                "\"keys\" is not an array",
            ),
            (
                "empty",
                br#"{"keys":[]}"#.to_vec(),
                "the JWKS has no usable signing key (the set is empty)",
            ),
            (
                "only hmac",
                br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.to_vec(),
                "the JWKS has no usable signing key (key 0: symmetric keys are not taken from a JWKS)",
            ),
        ];
        for (name, body, expected) in cases {
            let error = Jwks::parse(&body).expect_err(name);
            assert!(error.0.starts_with(expected), "{name}: {error}");
        }
    }

    #[test]
    fn a_key_is_chosen_by_kid_and_must_fit_the_algorithm() {
        let jwks = parse(json!({"keys": [
            rsa_jwk("a", 2048),
            ec_jwk("b"),
        ]}))
        .expect("a set");
        assert!(jwks.select(Some("a"), Algorithm::RS256).is_ok());
        assert!(jwks.select(Some("a"), Algorithm::PS512).is_ok());
        assert_eq!(
            jwks.select(Some("a"), Algorithm::ES256).err(),
            Some(KeyMiss::Unknown)
        );
        assert_eq!(
            jwks.select(Some("a"), Algorithm::HS256).err(),
            Some(KeyMiss::Unknown)
        );
        assert_eq!(
            jwks.select(Some("b"), Algorithm::ES384).err(),
            Some(KeyMiss::Unknown)
        );
        assert_eq!(
            jwks.select(Some("c"), Algorithm::RS256).err(),
            Some(KeyMiss::Unknown)
        );
        // Without a kid, the one key of the algorithm's type is used.
        assert!(jwks.select(None, Algorithm::ES256).is_ok());
        assert!(jwks.select(None, Algorithm::RS256).is_ok());
        assert_eq!(
            jwks.select(None, Algorithm::EdDSA).err(),
            Some(KeyMiss::Unknown)
        );
    }

    #[test]
    fn a_key_naming_its_alg_serves_only_that_alg() {
        let mut key = rsa_jwk("pinned", 2048);
        key["alg"] = json!("RS256");
        let jwks = parse(json!({"keys": [key]})).expect("a set");
        assert!(jwks.select(Some("pinned"), Algorithm::RS256).is_ok());
        assert_eq!(
            jwks.select(Some("pinned"), Algorithm::PS256).err(),
            Some(KeyMiss::Unknown)
        );
        let mut wrong = ec_jwk("wrong");
        wrong["alg"] = json!("RS256");
        let error = parse(json!({"keys": [wrong]})).expect_err("alg does not fit");
        assert!(error.0.contains("does not fit"), "{error}");
    }

    #[test]
    fn several_fitting_keys_without_a_kid_are_ambiguous() {
        let jwks =
            parse(json!({"keys": [rsa_jwk("one", 2048), rsa_jwk("two", 3072)]})).expect("a set");
        assert_eq!(
            jwks.select(None, Algorithm::RS256).err(),
            Some(KeyMiss::Ambiguous)
        );
        assert!(jwks.select(Some("two"), Algorithm::RS256).is_ok());
    }

    #[test]
    fn modulus_bits_ignore_leading_zero_bytes() {
        assert_eq!(modulus_bits(&URL_SAFE_NO_PAD.encode([0, 0, 1, 0])), Some(9));
        assert_eq!(
            modulus_bits(&URL_SAFE_NO_PAD.encode([0x80; 256])),
            Some(2048)
        );
        assert_eq!(
            modulus_bits(&URL_SAFE_NO_PAD.encode([0x7f; 256])),
            Some(2047)
        );
        assert_eq!(modulus_bits(""), Some(0));
        assert_eq!(modulus_bits("***"), None);
    }
}
