//! Who may call what: access tokens, each bound to one namespace and a scope.
//!
//! A token is `engram_<id>_<secret>`. The store keeps the id and the SHA-256 of
//! the secret, never the secret; a presented token is found by its id and its
//! secret's hash compared in constant time. The HTTP edge turns a valid token
//! into a [`Grant`]; the session keeps it, and the pipeline checks every
//! operation (nested ones too) against it. A session without a grant (stdio,
//! the command line, forwarded local sessions) is the data dir's owner and may
//! call anything.
//!
//! Must not: know HTTP or MCP.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::catalog::{Kind, OperationSpec};
use crate::error::OpError;

/// What a token may do, each including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read operations in the token's namespace.
    Read,
    /// Reads and writes in the token's namespace.
    Write,
    /// Everything, maintenance included, in any namespace it names.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    /// The scope an operation needs: its catalog `scope`, else its kind's.
    pub fn needed_by(spec: &OperationSpec) -> Scope {
        spec.scope.unwrap_or(match spec.kind {
            Kind::Read => Scope::Read,
            Kind::Write => Scope::Write,
            Kind::Admin => Scope::Admin,
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a valid token lets its bearer do. Never holds the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub token_id: String,
    /// Names the token in lists, logs and the audit trail.
    pub label: String,
    /// The namespace the token is bound to.
    pub namespace: String,
    pub scope: Scope,
}

impl Grant {
    /// Refuses an operation the grant's scope does not cover, saying what
    /// would.
    pub fn permit(&self, spec: &OperationSpec) -> Result<(), OpError> {
        let needed = Scope::needed_by(spec);
        if self.scope >= needed {
            return Ok(());
        }
        let what = match needed {
            Scope::Read => "reads",
            Scope::Write => "writes",
            Scope::Admin => "is maintenance",
        };
        Err(OpError::Forbidden(format!(
            "{} {what}, and this token ({:?}) has scope {}: it may call {} operations only. \
             Ask for a token with scope {needed} (engram token create --scope {needed})",
            spec.name,
            self.label,
            self.scope,
            match self.scope {
                Scope::Read => "read",
                Scope::Write => "read and write",
                Scope::Admin => "any",
            },
        )))
    }

    /// Refuses an argument only an admin may give (another namespace, every
    /// namespace at once).
    pub fn permit_admin(&self, what: &str) -> Result<(), OpError> {
        if self.scope == Scope::Admin {
            return Ok(());
        }
        Err(OpError::Forbidden(format!(
            "{what} needs a token with scope admin; this token ({:?}) has scope {} and sees \
             namespace {:?} only",
            self.label, self.scope, self.namespace
        )))
    }
}

const PREFIX: &str = "engram_";
/// Random bytes in a token's secret.
const SECRET_BYTES: usize = 32;
/// Hex digits of a token's id.
const ID_CHARS: usize = 16;

/// A token just made: the text handed to its owner once, and what is stored.
pub struct Minted {
    pub token: String,
    pub id: String,
    pub secret_hash: [u8; 32],
}

/// Makes a new random token.
pub fn mint() -> Result<Minted, getrandom::Error> {
    let mut id = [0u8; ID_CHARS / 2];
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut id)?;
    getrandom::fill(&mut secret)?;
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    Ok(Minted {
        token: format!("{PREFIX}{id}_{secret}"),
        secret_hash: hash(&secret),
        id,
    })
}

/// A presented token split into its id and secret, if it has the shape of one.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == ID_CHARS
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && !secret.is_empty()
        && secret.len() <= 2 * SECRET_BYTES;
    well_formed.then_some((id, secret))
}

pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `secret` hashes to `stored`, in time that does not depend on where
/// they differ.
pub fn secret_matches(secret: &str, stored: &[u8]) -> bool {
    hash(secret).ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_parse_and_match_only_their_own_hash() {
        let a = mint().unwrap();
        let b = mint().unwrap();
        let (id, secret) = parse(&a.token).unwrap();
        assert_eq!(id, a.id);
        assert!(secret_matches(secret, &a.secret_hash));
        assert!(!secret_matches(secret, &b.secret_hash));
        assert!(!secret_matches(secret, &a.secret_hash[..31]));
        assert_ne!(a.token, b.token);
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        for t in [
            "",
            "engram_",
            "engram_abc_def",
            "engram_0123456789abcdeg_x",
            "engram_0123456789abcdef_",
            "bearer engram_0123456789abcdef_x",
        ] {
            assert!(parse(t).is_none(), "{t:?}");
        }
        assert!(parse("engram_0123456789abcdef_secret").is_some());
    }

    #[test]
    fn scopes_include_the_ones_below() {
        assert!(Scope::Admin > Scope::Write && Scope::Write > Scope::Read);
        for s in [Scope::Read, Scope::Write, Scope::Admin] {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
    }
}
