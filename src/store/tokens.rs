//! Access tokens as stored: id, label, namespace, scope, the SHA-256 of the
//! secret (never the secret), times. Every process on the data dir reads the
//! same table, so a token made or revoked by the command line counts at the
//! server's next request.
//!
//! [`Direct`] is the command line's way in: a connection of its own to the
//! data dir's database, beside the server that may own the dir (sqlite's WAL
//! lets them share the file; writes wait for each other).

use std::path::Path;

use serde::Serialize;

use super::audit::{AuditFilter, audit_query, audit_row};
use super::sql::{Conn, Database, Row, args};
use super::{DB_FILE_NAME, Store, StoreError, migrations, open_connection};
use crate::auth::Scope;
use crate::config::{Config, Durability};
use crate::model::{AuditEntry, Micros, micros_to_datetime};

/// A token as `engram token list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub label: String,
    pub namespace: String,
    pub scope: Scope,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl TokenRecord {
    /// Why the token may not be used at `now`, if it may not.
    pub fn unusable(&self, now: Micros) -> Option<&'static str> {
        if self.revoked_at.is_some() {
            Some("revoked")
        } else if self.expires_at.is_some_and(|e| e.timestamp_micros() <= now) {
            Some("expired")
        } else {
            None
        }
    }
}

/// A token to store.
pub struct NewToken {
    pub id: String,
    pub label: String,
    pub namespace: String,
    pub scope: Scope,
    pub secret_hash: [u8; 32],
    pub expires_at: Option<Micros>,
}

const COLUMNS: &str =
    "id, label, namespace, scope, created_at, expires_at, revoked_at, last_used_at, secret_hash";

fn token_row(r: &Row<'_>) -> Result<(TokenRecord, Vec<u8>), StoreError> {
    let time = |i: usize| -> Result<Option<_>, StoreError> {
        Ok(r.get::<Option<i64>>(i)?.map(micros_to_datetime))
    };
    let scope: String = r.get(3)?;
    Ok((
        TokenRecord {
            id: r.get(0)?,
            label: r.get(1)?,
            namespace: r.get(2)?,
            // The table's CHECK admits only the three.
            scope: Scope::parse(&scope).unwrap_or(Scope::Read),
            created_at: micros_to_datetime(r.get(4)?),
            expires_at: time(5)?,
            revoked_at: time(6)?,
            last_used_at: time(7)?,
        },
        r.get(8)?,
    ))
}

/// The token with this id and its secret's hash.
fn find(conn: Conn<'_>, id: &str) -> Result<Option<(TokenRecord, Vec<u8>)>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM tokens WHERE id = ?1");
    conn.first(&sql, &args![id], token_row)
}

/// Whether any token is neither revoked nor expired at `now`.
fn any_usable(conn: Conn<'_>, now: Micros) -> Result<bool, StoreError> {
    conn.value(
        "SELECT EXISTS (SELECT 1 FROM tokens WHERE revoked_at IS NULL
             AND (expires_at IS NULL OR expires_at > ?1))",
        &args![now],
    )
}

/// Whether any token was ever made (revoked and expired ones count).
fn any_made(conn: Conn<'_>) -> Result<bool, StoreError> {
    conn.value("SELECT EXISTS (SELECT 1 FROM tokens)", &[])
}

impl Store {
    /// The token with this id, and the hash its secret must match.
    pub async fn token(&self, id: &str) -> Result<Option<(TokenRecord, Vec<u8>)>, StoreError> {
        let id = id.to_string();
        self.readers.read(move |conn| find(conn, &id)).await
    }

    /// Whether any token could be used now (a public bind needs one).
    pub async fn tokens_in_use(&self, now: Micros) -> Result<bool, StoreError> {
        self.readers.read(move |conn| any_usable(conn, now)).await
    }

    /// Whether any token was ever made: from then on HTTP requests need one,
    /// even once every token is revoked or expired.
    pub async fn tokens_made(&self) -> Result<bool, StoreError> {
        self.readers.read(any_made).await
    }

    /// Notes that the token was used at `at`.
    pub async fn touch_token(&self, id: &str, at: Micros) -> Result<(), StoreError> {
        let id = id.to_string();
        self.writer
            .write(move |txn| {
                txn.conn.execute(
                    "UPDATE tokens SET last_used_at = ?2 WHERE id = ?1",
                    &args![id, at],
                )?;
                Ok(())
            })
            .await
    }
}

/// The data dir's database, opened by the command line for itself.
pub struct Direct {
    db: Database,
}

impl Direct {
    /// Opens (creating and migrating if needed) the store `config` names: its
    /// PostgreSQL database, or the sqlite file in its data dir.
    pub fn open(config: &Config) -> Result<Direct, StoreError> {
        match &config.store_url {
            Some(url) => Ok(Direct {
                db: super::pg::connect_migrated(url)?,
            }),
            None => Direct::open_dir(&config.data_dir),
        }
    }

    /// Opens (creating and migrating if needed) the database in `data_dir`.
    pub fn open_dir(data_dir: &Path) -> Result<Direct, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Migration(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let mut conn = open_connection(&data_dir.join(DB_FILE_NAME), Durability::Full, false)?;
        migrations::run(&mut conn)?;
        Ok(Direct {
            db: Database::Sqlite(conn),
        })
    }

    fn conn(&self) -> Conn<'_> {
        self.db.conn()
    }

    /// Stores a new token; refused if its label is taken or is not 1 to 100 of
    /// `A-Z a-z 0-9 . _ -` (labels travel in headers, logs and tables).
    pub fn create_token(&self, token: NewToken, now: Micros) -> Result<TokenRecord, StoreError> {
        let label_ok = (1..=100).contains(&token.label.len())
            && token
                .label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !label_ok {
            return Err(StoreError::Conflict(format!(
                "the label {:?} is not 1 to 100 letters, digits, '.', '_' or '-'",
                crate::error::truncate_chars(&token.label, 100)
            )));
        }
        let taken: bool = self.conn().value(
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE label = ?1)",
            &args![token.label],
        )?;
        if taken {
            return Err(StoreError::Conflict(format!(
                "a token labelled {:?} exists already: choose another --label, or revoke it first",
                token.label
            )));
        }
        self.conn().execute(
            "INSERT INTO tokens (id, label, namespace, scope, secret_hash, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            &args![
                token.id,
                token.label,
                token.namespace,
                token.scope.as_str(),
                token.secret_hash.as_slice(),
                now,
                token.expires_at
            ],
        )?;
        find(self.conn(), &token.id)?
            .map(|(record, _)| record)
            .ok_or_else(|| StoreError::Corrupt("a token just stored is missing".into()))
    }

    /// The migrations applied to the store, oldest first: (version, name).
    pub fn migrations(&self) -> Result<Vec<(i64, String)>, StoreError> {
        self.conn().rows(
            "SELECT version, name FROM schema_migrations ORDER BY version",
            &[],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Every token, oldest first.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM tokens ORDER BY created_at, rowid");
        self.conn().rows(&sql, &[], |r| Ok(token_row(r)?.0))
    }

    /// Revokes the token with this label or id; says which it was. Revoking a
    /// revoked token changes nothing.
    pub fn revoke_token(&self, label_or_id: &str, now: Micros) -> Result<TokenRecord, StoreError> {
        // A label first: labels are chosen, ids random.
        let id: Option<String> = self.conn().first(
            "SELECT id FROM tokens WHERE label = ?1 OR id = ?1 ORDER BY label = ?1 DESC",
            &args![label_or_id],
            |r| r.get(0),
        )?;
        let Some(id) = id else {
            return Err(StoreError::NotFound(format!(
                "no token has the label or id {label_or_id:?}: engram token list shows them"
            )));
        };
        self.conn().execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            &args![id, now],
        )?;
        find(self.conn(), &id)?
            .map(|(record, _)| record)
            .ok_or_else(|| StoreError::Corrupt("a token just revoked is missing".into()))
    }

    /// Audit rows, newest first, with the namespace each belongs to.
    pub fn audit(
        &self,
        namespace: Option<&str>,
        filter: AuditFilter,
        limit: usize,
    ) -> Result<Vec<(String, AuditEntry)>, StoreError> {
        let conn = self.conn();
        audit_query(conn.dialect(), namespace, filter, None, limit)
            .rows(conn, |r| Ok((r.get::<String>(6)?, audit_row(r)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::now_micros;

    fn token(label: &str, expires_at: Option<Micros>) -> NewToken {
        let minted = crate::auth::mint().unwrap();
        NewToken {
            id: minted.id,
            label: label.into(),
            namespace: "ns".into(),
            scope: Scope::Write,
            secret_hash: minted.secret_hash,
            expires_at,
        }
    }

    #[test]
    fn tokens_are_created_listed_and_revoked_by_label_or_id() {
        let dir = tempfile::tempdir().unwrap();
        let db = Direct::open_dir(dir.path()).unwrap();
        let now = now_micros();
        assert!(!any_usable(db.conn(), now).unwrap());
        assert!(!any_made(db.conn()).unwrap());
        let a = db.create_token(token("a", None), now).unwrap();
        let b = db.create_token(token("b", Some(now - 1)), now).unwrap();
        assert!(matches!(
            db.create_token(token("a", None), now),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(b.unusable(now), Some("expired"));
        assert!(any_usable(db.conn(), now).unwrap());
        let listed: Vec<String> = db.tokens().unwrap().into_iter().map(|t| t.label).collect();
        assert_eq!(listed, ["a", "b"]);

        let revoked = db.revoke_token(&a.id, now).unwrap();
        assert_eq!(revoked.unusable(now), Some("revoked"));
        assert!(!any_usable(db.conn(), now).unwrap(), "b expired, a revoked");
        assert!(any_made(db.conn()).unwrap(), "but tokens were made");
        assert!(matches!(
            db.revoke_token("nobody", now),
            Err(StoreError::NotFound(_))
        ));
        let (stored, hash) = find(db.conn(), &a.id).unwrap().unwrap();
        assert_eq!(stored.label, "a");
        assert_eq!(hash.len(), 32);
    }
}
