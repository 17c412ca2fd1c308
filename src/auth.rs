//! Access control: bearer tokens with roles (CONTRACT §8).
//!
//! The config holds only the SHA-256 of each token (`[[auth.tokens]]`, `sha256 = "…"`), with
//! its role: `ops` (everything), `officer` (with an officer id: the alerts of the cells the city
//! model assigns to that officer, and nothing else) or `ingest` (only `POST /api/ingest/…`).
//! Tokens are random 256-bit secrets ([`generate`]), so an unsalted hash is enough to make a
//! leaked config useless for logging in, and a lookup by hash does not leak the token through
//! timing. Tokens are never logged: [`Caller`] carries the token's name, never the token.
//!
//! Requests carry `Authorization: Bearer TOKEN`. Websocket upgrades may instead pass
//! `?token=TOKEN`, because browsers cannot set headers on a websocket; the price is that the
//! token appears in the URL (proxy logs, history), so the query form is accepted on `/ws/*`
//! routes only, and can be switched off (`http.ws_query_token = false`).

use citybrain_dataflows::CityModel;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;
use std::sync::Arc;

/// A role (§8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The operations centre: everything.
    Ops,
    /// A grid officer: their own cells only.
    Officer,
    /// A system pushing sensor data over HTTP: `POST /api/ingest/…` only.
    Ingest,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ops => "ops",
            Role::Officer => "officer",
            Role::Ingest => "ingest",
        }
    }
}

/// One `[[auth.tokens]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs and for `acked_by` (default: the officer id, or the role).
    pub name: Option<String>,
    /// The role.
    pub role: Role,
    /// The officer id (`officer` role only; must appear in the city model's `cell.officers`).
    pub officer: Option<String>,
    /// SHA-256 of the token, lowercase hex (`citybrain token` prints it).
    pub sha256: String,
}

/// Who is calling, once the token checked out.
#[derive(Debug)]
pub struct Caller {
    /// The token's name (what `acked_by` says).
    pub name: String,
    /// The role.
    pub role: Role,
    /// For an officer: their cells.
    pub cells: Arc<BTreeSet<String>>,
    /// For an officer: their id (as the city model's cells name them).
    pub officer: Option<String>,
}

impl Caller {
    /// The alerts this caller may see.
    pub fn scope(&self) -> crate::hub::Scope {
        match self.role {
            Role::Officer => crate::hub::Scope::Cells(self.cells.clone()),
            Role::Ops | Role::Ingest => crate::hub::Scope::All,
        }
    }
}

/// The configured tokens, by hash.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Arc<Caller>>,
}

/// Errors in the token configuration.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The hash is not 64 hex digits.
    #[error("auth.tokens[{0}].sha256: expected 64 hex digits (run `citybrain token` to make one)")]
    BadHash(usize),
    /// An officer token without an officer id, or another role with one.
    #[error("auth.tokens[{0}]: `officer` is required for role officer and only allowed there")]
    Officer(usize),
    /// Two entries with the same hash.
    #[error("auth.tokens[{0}]: the same token is configured twice")]
    Duplicate(usize),
}

/// SHA-256 of a token, lowercase hex: what the config stores.
pub fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A new random token: `cb_` and 64 hex digits (256 bits from the OS generator).
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("cb_{}", hex(&bytes))
}

impl Tokens {
    /// Checks the entries and resolves officers' cells in the city model. An officer id that
    /// no cell names is accepted with a warning (the officer then sees no alerts).
    pub fn new(entries: &[TokenConfig], city: &CityModel) -> Result<Tokens, TokenError> {
        let officer_cells: HashMap<&str, BTreeSet<String>> = city
            .officers()
            .map(|(o, cells)| (o, cells.iter().map(|&c| city.cells[c as usize].id.clone()).collect()))
            .collect();
        let mut by_hash = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            let h = unhex(&e.sha256.to_ascii_lowercase()).ok_or(TokenError::BadHash(i))?;
            if (e.role == Role::Officer) != e.officer.is_some() {
                return Err(TokenError::Officer(i));
            }
            let cells = match &e.officer {
                Some(o) => officer_cells.get(o.as_str()).cloned().unwrap_or_else(|| {
                    tracing::warn!(officer = %o, "token for an officer no cell names: it will see no alerts");
                    BTreeSet::new()
                }),
                None => BTreeSet::new(),
            };
            let name =
                e.name.clone().or_else(|| e.officer.clone()).unwrap_or_else(|| e.role.as_str().to_string());
            let caller =
                Arc::new(Caller { name, role: e.role, cells: Arc::new(cells), officer: e.officer.clone() });
            if by_hash.insert(h, caller).is_some() {
                return Err(TokenError::Duplicate(i));
            }
        }
        Ok(Tokens { by_hash })
    }

    /// The caller a presented token belongs to.
    pub fn check(&self, token: &str) -> Option<Arc<Caller>> {
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        self.by_hash.get(&digest).cloned()
    }

    /// Number of configured tokens.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether no token is configured (every protected route then answers 401).
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_hash_and_officers_get_their_cells() {
        let city = CityModel::from_geojson_str(
            r#"{"type":"FeatureCollection","features":[
              {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[2,0],[2,1],[0,1],[0,0]]]},"properties":{"kind":"district","id":"d1","name":"One"}},
              {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1],[0,0]]]},"properties":{"kind":"cell","id":"c1","district":"d1","officers":["o1"]}},
              {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[1,0],[2,0],[2,1],[1,1],[1,0]]]},"properties":{"kind":"cell","id":"c2","district":"d1","officers":["o1","o2"]}}
            ]}"#,
        )
        .unwrap();
        let (ops, officer) = (generate(), generate());
        let entries = vec![
            TokenConfig { name: Some("desk".into()), role: Role::Ops, officer: None, sha256: hash(&ops) },
            TokenConfig {
                name: None,
                role: Role::Officer,
                officer: Some("o2".into()),
                sha256: hash(&officer),
            },
        ];
        let t = Tokens::new(&entries, &city).unwrap();
        assert_eq!(t.check(&ops).unwrap().name, "desk");
        let o = t.check(&officer).unwrap();
        assert_eq!((o.name.as_str(), o.role), ("o2", Role::Officer));
        assert_eq!(o.cells.iter().collect::<Vec<_>>(), ["c2"]);
        assert!(t.check("cb_wrong").is_none());
        assert!(t.check("").is_none());
        let bad = [TokenConfig { name: None, role: Role::Officer, officer: None, sha256: hash("x") }];
        assert!(matches!(Tokens::new(&bad, &city), Err(TokenError::Officer(0))));
        let bad = [TokenConfig { name: None, role: Role::Ops, officer: None, sha256: "abc".into() }];
        assert!(matches!(Tokens::new(&bad, &city), Err(TokenError::BadHash(0))));
    }
}
