//! API keys: who may use the server, and the principal a request acts as.
//!
//! Keys come from `PROMPTKIT_API_KEYS` (comma-separated) or a keys file (one a line), each
//! optionally `name:key`. The server keeps only each key's SHA-256 digest; a presented bearer
//! token is hashed and compared with every digest in constant time, so neither the time taken
//! nor the key's length tells an attacker how close a guess came.
//!
//! A key's *id* is 16 hex digits of a second, domain-separated SHA-256 of the key: it names the
//! key in session namespaces and logs without revealing it.

use std::fmt;
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use sha2::{Digest as _, Sha256};
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};

use super::error::ApiError;
use crate::ConfigError;

/// The shortest key accepted: anything shorter is too easy to guess.
const MIN_KEY_LEN: usize = 16;

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    /// Derived from the key (never the key): names the key's session namespace.
    pub(crate) key_id: String,
    /// The key's name from `name:key`, if it has one.
    pub(crate) name: Option<String>,
}

impl Principal {
    /// The principal of a server without keys (reachable only where it was allowed to be).
    pub(crate) fn anonymous() -> Self {
        Self {
            key_id: "anon".to_owned(),
            name: Some("anonymous".to_owned()),
        }
    }

    /// The user id the server gives turns of this principal: the key's name, or `key-<id>`.
    pub(crate) fn user_id(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => format!("key-{}", self.key_id),
        }
    }
}

struct Entry {
    digest: [u8; 32],
    principal: Arc<Principal>,
}

/// The server's keys. `Debug` shows how many there are and their names, never a key.
#[derive(Default)]
pub(crate) struct ApiKeys {
    entries: Vec<Entry>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("count", &self.entries.len())
            .field(
                "principals",
                &self
                    .entries
                    .iter()
                    .map(|e| &*e.principal)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// 16 hex digits naming `key`; the prefix keeps it apart from the digest used to verify keys.
fn key_id(key: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"promptkit serve key id\n");
    hasher.update(key.as_bytes());
    let hash: [u8; 32] = hasher.finalize().into();
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl ApiKeys {
    /// Keys from `PROMPTKIT_API_KEYS`-style text (comma-separated) and from a keys file (one a
    /// line, `#` comments); each entry is `key` or `name:key`.
    ///
    /// # Errors
    /// A [`ConfigError`] for a key shorter than 16 characters, a bad name, or a key or name
    /// given twice; it names the entry by position, never by its text.
    pub(crate) fn parse(env: Option<&str>, file: Option<&str>) -> Result<Self, ConfigError> {
        let from_env = env
            .into_iter()
            .flat_map(|text| text.split(','))
            .enumerate()
            .map(|(i, entry)| (format!("PROMPTKIT_API_KEYS entry {}", i + 1), entry));
        let from_file = file
            .into_iter()
            .flat_map(str::lines)
            .enumerate()
            .map(|(i, line)| (format!("api keys file line {}", i + 1), line))
            .filter(|(_, line)| {
                let line = line.trim();
                !line.is_empty() && !line.starts_with('#')
            });
        let mut entries: Vec<Entry> = Vec::new();
        for (place, entry) in from_env.chain(from_file) {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let (name, key) = match entry.split_once(':') {
                Some((name, key)) => (Some(name.trim()), key.trim()),
                None => (None, entry),
            };
            if let Some(name) = name
                && !valid_name(name)
            {
                return Err(ConfigError(format!(
                    "{place}: a key's name (before `:`) must be 1 to 64 of A-Z, a-z, 0-9, \
                     `.`, `_` and `-`"
                )));
            }
            if key.chars().count() < MIN_KEY_LEN {
                return Err(ConfigError(format!(
                    "{place}: an API key must be at least {MIN_KEY_LEN} characters"
                )));
            }
            let entry = Entry {
                digest: digest(key.as_bytes()),
                principal: Arc::new(Principal {
                    key_id: key_id(key),
                    name: name.map(str::to_owned),
                }),
            };
            if entries.iter().any(|e| e.digest == entry.digest) {
                return Err(ConfigError(format!("{place}: this key is given twice")));
            }
            if entry.principal.name.is_some()
                && entries
                    .iter()
                    .any(|e| e.principal.name == entry.principal.name)
            {
                return Err(ConfigError(format!("{place}: this name is given twice")));
            }
            entries.push(entry);
        }
        Ok(Self { entries })
    }

    /// Whether no key is configured.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many keys there are.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The principal of the request's bearer token.
    ///
    /// Every configured digest is compared, whichever matches, so the time taken does not
    /// depend on which key (if any) was presented.
    ///
    /// # Errors
    /// 401 when no bearer token is presented or it is not one of the keys.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Principal>, ApiError> {
        let token = bearer(headers).ok_or_else(ApiError::missing_key)?;
        let presented = digest(token);
        let mut found = subtle::Choice::from(0);
        let mut index = 0_u64;
        for (i, entry) in self.entries.iter().enumerate() {
            let equal = entry.digest.ct_eq(&presented);
            index.conditional_assign(&(i as u64), equal);
            found |= equal;
        }
        if bool::from(found) {
            let index = usize::try_from(index).unwrap_or(usize::MAX);
            self.entries
                .get(index)
                .map(|e| Arc::clone(&e.principal))
                .ok_or_else(ApiError::wrong_key)
        } else {
            Err(ApiError::wrong_key())
        }
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const A: &str = "sk-test-aaaaaaaaaaaaaaaa";
    const B: &str = "sk-test-bbbbbbbbbbbbbbbb";

    fn with_bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    #[test]
    fn keys_come_from_the_environment_and_a_file_with_optional_names() {
        let file = format!("# operators\n\nalice:{B}\n");
        let keys = ApiKeys::parse(Some(&format!(" {A} ,")), Some(&file)).unwrap();
        assert_eq!(keys.len(), 2);
        let a = keys.authenticate(&with_bearer(A)).unwrap();
        let b = keys.authenticate(&with_bearer(B)).unwrap();
        assert_eq!(a.name, None);
        assert_eq!(b.name.as_deref(), Some("alice"));
        assert_eq!(b.user_id(), "alice");
        assert_eq!(a.user_id(), format!("key-{}", a.key_id));
        assert_ne!(a.key_id, b.key_id);
        assert_eq!(a.key_id.len(), 16);
        assert!(!A.contains(&a.key_id) && !format!("{keys:?}").contains("sk-test"));
    }

    #[test]
    fn wrong_missing_and_malformed_tokens_are_refused() {
        let keys = ApiKeys::parse(Some(A), None).unwrap();
        assert_eq!(
            keys.authenticate(&HeaderMap::new()).unwrap_err().code,
            Some("missing_api_key")
        );
        let wrong = keys.authenticate(&with_bearer(B)).unwrap_err();
        assert_eq!(wrong.status, 401);
        assert_eq!(wrong.kind, "authentication_error");
        assert!(keys.authenticate(&with_bearer(&A[..A.len() - 1])).is_err());
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(keys.authenticate(&basic).is_err());
        let mut lower = HeaderMap::new();
        lower.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("bearer  {A}")).unwrap(),
        );
        assert!(keys.authenticate(&lower).is_ok());
    }

    #[test]
    fn weak_or_repeated_keys_are_configuration_errors_that_do_not_print_them() {
        let short = ApiKeys::parse(Some("sk-short"), None).unwrap_err();
        assert!(short.0.contains("at least 16"), "{short}");
        assert!(!short.0.contains("sk-short"), "{short}");
        let twice = ApiKeys::parse(Some(&format!("{A},{A}")), None).unwrap_err();
        assert!(twice.0.contains("twice") && !twice.0.contains(A), "{twice}");
        let names = ApiKeys::parse(Some(&format!("x:{A},x:{B}")), None).unwrap_err();
        assert!(names.0.contains("name is given twice"), "{names}");
        let bad = ApiKeys::parse(None, Some(&format!("a b:{A}"))).unwrap_err();
        assert!(bad.0.contains("line 1"), "{bad}");
    }
}
