//! The store's one way to speak to a database, whichever it is: a statement
//! with its parameters, rows read column by column. The layer files write their
//! SQL once, against [`Conn`], and run the same on sqlite (the embedded
//! default) and PostgreSQL (shared by many nodes).
//!
//! - Statements are written in sqlite's spelling of parameters (`?1`, `?`);
//!   PostgreSQL receives them numbered (`$1`), translated once per statement
//!   and cached with its prepared form.
//! - Parameters are [`Value`]s (`args![a, b]`), bound as the column asks:
//!   PostgreSQL types every parameter, so an integer bound to a `BOOLEAN` or a
//!   `DOUBLE PRECISION` is converted here rather than refused.
//! - A column is read with [`Row::get`] into a Rust type ([`Column`]).
//! - The few statements whose SQL differs (JSON arrays, sizes, the first
//!   statement of a write transaction) ask [`Conn::dialect`].
//! - While a read runs on the writer's connection, lent to it ([`ReadsOnly`]),
//!   a statement that would write is refused as a read-only connection
//!   refuses it.
//!
//! Must not: leave the store module. No rusqlite or PostgreSQL type appears in
//! any signature outside `store`.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{IsNull, ToSql as PgToSql, Type};
use rusqlite::types::{ToSqlOutput, ValueRef};

use super::StoreError;

/// Which SQL a statement must be written in, where the two differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Written before a column test that must not choose the index (`+`
    /// on sqlite). sqlite, with no statistics, guesses that an equality on
    /// an indexed column keeps about ten rows, so a lookup by id that also
    /// tests the namespace would walk the namespace's time index and compare
    /// every row's id (at a million events, 100+ ms a call). PostgreSQL
    /// plans by its statistics: nothing.
    pub(crate) fn unindexed(self) -> &'static str {
        match self {
            Dialect::Sqlite => "+",
            Dialect::Postgres => "",
        }
    }
}

/// A parameter of a statement.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(Cow<'a, str>),
    Blob(Cow<'a, [u8]>),
}

/// What can be bound as a parameter: `args![...]` calls `arg` on each.
pub(super) trait Arg {
    fn arg(&self) -> Value<'_>;
}

impl Arg for str {
    fn arg(&self) -> Value<'_> {
        Value::Text(Cow::Borrowed(self))
    }
}
impl Arg for String {
    fn arg(&self) -> Value<'_> {
        Value::Text(Cow::Borrowed(self))
    }
}
impl Arg for [u8] {
    fn arg(&self) -> Value<'_> {
        Value::Blob(Cow::Borrowed(self))
    }
}
impl Arg for i64 {
    fn arg(&self) -> Value<'_> {
        Value::Int(*self)
    }
}
impl Arg for usize {
    fn arg(&self) -> Value<'_> {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl Arg for u64 {
    fn arg(&self) -> Value<'_> {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl Arg for i32 {
    fn arg(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl Arg for u32 {
    fn arg(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl Arg for f64 {
    fn arg(&self) -> Value<'_> {
        Value::Real(*self)
    }
}
impl Arg for bool {
    fn arg(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl<T: Arg> Arg for Option<T> {
    fn arg(&self) -> Value<'_> {
        self.as_ref().map_or(Value::Null, Arg::arg)
    }
}
impl<T: Arg + ?Sized> Arg for &T {
    fn arg(&self) -> Value<'_> {
        (**self).arg()
    }
}
impl<'a> Arg for Value<'a> {
    fn arg(&self) -> Value<'_> {
        match self {
            Value::Text(t) => Value::Text(Cow::Borrowed(t)),
            Value::Null => Value::Null,
            Value::Int(i) => Value::Int(*i),
            Value::Real(r) => Value::Real(*r),
            Value::Blob(b) => Value::Blob(Cow::Borrowed(b)),
        }
    }
}

impl From<String> for Value<'static> {
    fn from(s: String) -> Self {
        Value::Text(Cow::Owned(s))
    }
}
impl<T: Into<Value<'static>>> From<Option<T>> for Value<'static> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}
impl From<i64> for Value<'static> {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<f64> for Value<'static> {
    fn from(r: f64) -> Self {
        Value::Real(r)
    }
}
impl From<bool> for Value<'static> {
    fn from(b: bool) -> Self {
        Value::Int(i64::from(b))
    }
}

/// The parameters of one statement: `args![namespace, id, now]`.
macro_rules! args {
    ($($x:expr),* $(,)?) => {
        [$($crate::store::sql::Arg::arg(&$x)),*]
    };
}
pub(super) use args;

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl PgToSql for Value<'_> {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                _ => Err(format!("an integer cannot be bound to a {ty} parameter").into()),
            },
            Value::Real(r) => match *ty {
                Type::FLOAT8 => r.to_sql(ty, out),
                Type::FLOAT4 => (*r as f32).to_sql(ty, out),
                _ => Err(format!("a number cannot be bound to a {ty} parameter").into()),
            },
            Value::Text(t) => match *ty {
                Type::JSONB => {
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(t.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSON => {
                    out.extend_from_slice(t.as_bytes());
                    Ok(IsNull::No)
                }
                _ => t.as_ref().to_sql(ty, out),
            },
            Value::Blob(b) => b.as_ref().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// One row of an answer.
pub(crate) enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

impl Row<'_> {
    /// How many columns the row has.
    pub(super) fn len(&self) -> usize {
        match self {
            Row::Sqlite(r) => r.as_ref().column_count(),
            Row::Postgres(r) => r.len(),
        }
    }

    /// Column `i`, read as `T`.
    pub(super) fn get<T: Column>(&self, i: usize) -> Result<T, StoreError> {
        match self {
            Row::Sqlite(r) => Ok(T::from_sqlite(r, i)?),
            Row::Postgres(r) => T::from_postgres(r, i),
        }
    }
}

/// A Rust type a column can be read as, from either database.
pub(super) trait Column: Sized {
    fn from_sqlite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self>;
    fn from_postgres(r: &postgres::Row, i: usize) -> Result<Self, StoreError>;
}

fn pg<'r, T: postgres::types::FromSql<'r>>(
    r: &'r postgres::Row,
    i: usize,
) -> Result<T, StoreError> {
    r.try_get(i).map_err(StoreError::from)
}

fn pg_type(r: &postgres::Row, i: usize) -> Result<&Type, StoreError> {
    r.columns()
        .get(i)
        .map(|c| c.type_())
        .ok_or_else(|| StoreError::Corrupt(format!("the answer has no column {i}")))
}

impl Column for i64 {
    fn from_sqlite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
        r.get(i)
    }
    fn from_postgres(r: &postgres::Row, i: usize) -> Result<Self, StoreError> {
        match *pg_type(r, i)? {
            Type::INT4 => Ok(i64::from(pg::<i32>(r, i)?)),
            Type::INT2 => Ok(i64::from(pg::<i16>(r, i)?)),
            Type::BOOL => Ok(i64::from(pg::<bool>(r, i)?)),
            _ => pg(r, i),
        }
    }
}

impl Column for f64 {
    fn from_sqlite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
        r.get(i)
    }
    fn from_postgres(r: &postgres::Row, i: usize) -> Result<Self, StoreError> {
        match *pg_type(r, i)? {
            Type::FLOAT4 => Ok(f64::from(pg::<f32>(r, i)?)),
            Type::INT8 => Ok(pg::<i64>(r, i)? as f64),
            Type::INT4 => Ok(f64::from(pg::<i32>(r, i)?)),
            _ => pg(r, i),
        }
    }
}

impl Column for bool {
    fn from_sqlite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
        r.get(i)
    }
    fn from_postgres(r: &postgres::Row, i: usize) -> Result<Self, StoreError> {
        match *pg_type(r, i)? {
            Type::BOOL => pg(r, i),
            _ => Ok(i64::from_postgres(r, i)? != 0),
        }
    }
}

impl Column for String {
    fn from_sqlite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
        r.get(i)
    }
    fn from_postgres(r: &postgres::Row, i: usize) -> Result<Self, StoreError> {
        match *pg_type(r, i)? {
            Type::INT8 | Type::INT4 | Type::INT2 => Ok(i64::from_postgres(r, i)?.to_string()),
            _ => pg(r, i),
        }
    }
}

impl Column for Vec<u8> {
    fn from_sqlite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
        r.get(i)
    }
    fn from_postgres(r: &postgres::Row, i: usize) -> Result<Self, StoreError> {
        pg(r, i)
    }
}

/// Reads whether a column is NULL, whatever its type.
struct Nullness(bool);

impl<'r> postgres::types::FromSql<'r> for Nullness {
    fn from_sql(_: &Type, _: &'r [u8]) -> Result<Self, BoxError> {
        Ok(Nullness(false))
    }
    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Nullness(true))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

impl<T: Column + rusqlite::types::FromSql> Column for Option<T> {
    fn from_sqlite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
        r.get(i)
    }
    fn from_postgres(r: &postgres::Row, i: usize) -> Result<Self, StoreError> {
        if pg::<Nullness>(r, i)?.0 {
            Ok(None)
        } else {
            T::from_postgres(r, i).map(Some)
        }
    }
}

/// A PostgreSQL connection as the store holds it: the client, the statements
/// it has prepared (by their sqlite-spelled text) and whether a transaction
/// is open on it.
pub(crate) struct PgConn {
    /// `None` only while being dropped (see `Drop`).
    client: RefCell<Option<postgres::Client>>,
    statements: RefCell<HashMap<String, postgres::Statement>>,
    in_transaction: Cell<bool>,
}

impl PgConn {
    pub(crate) fn new(client: postgres::Client) -> Self {
        PgConn {
            client: RefCell::new(Some(client)),
            statements: RefCell::default(),
            in_transaction: Cell::new(false),
        }
    }

    fn client(&self) -> std::cell::RefMut<'_, postgres::Client> {
        std::cell::RefMut::map(self.client.borrow_mut(), |c| {
            c.as_mut()
                .expect("the client is there until the connection is dropped")
        })
    }

    /// A round trip to the server.
    pub(crate) fn ping(&self) -> Result<(), postgres::Error> {
        self.client().batch_execute("")
    }

    /// Waits up to `timeout` for a notification on a channel this connection
    /// listens on; takes every one waiting. Whether any came.
    pub(crate) fn wait_for_notification(
        &self,
        timeout: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let mut client = self.client();
        let mut notifications = client.notifications();
        let came = notifications.timeout_iter(timeout).next()?.is_some();
        while notifications.iter().next()?.is_some() {}
        Ok(came)
    }

    /// Whether the connection to the server is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.client.borrow().as_ref().is_none_or(|c| c.is_closed())
    }

    fn query(&self, sql: &str, params: &[Value<'_>]) -> Result<Vec<postgres::Row>, StoreError> {
        let stmt = self.statement(sql)?;
        let mut client = self.client();
        Ok(client.query_raw(&stmt, params.iter())?.collect()?)
    }

    fn statement(&self, sql: &str) -> Result<postgres::Statement, StoreError> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let prepared = self.client().prepare(&numbered(sql))?;
        self.statements
            .borrow_mut()
            .insert(sql.to_string(), prepared.clone());
        Ok(prepared)
    }
}

/// The client blocks on a runtime of its own, also when it is dropped (it
/// says goodbye to the server), which tokio forbids on a runtime's thread: a
/// connection dropped there is closed on a thread of its own.
impl Drop for PgConn {
    fn drop(&mut self) {
        let Some(client) = self.client.get_mut().take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new()
                .name("engram-pg-close".into())
                .spawn(move || drop(client));
        }
    }
}

thread_local! {
    /// Set while this thread runs a read on the writer's connection.
    static READS_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread, while it runs a read on the writer's connection, as one
/// on which no sqlite statement may write, until dropped. A statement counts
/// as writing when sqlite says it is not read-only (`sqlite3_stmt_readonly`:
/// transaction control and most pragmas pass, as on a `query_only`
/// connection); a batch of statements is refused whole. (sqlite's own `PRAGMA
/// query_only` would do it, but setting it expires every prepared statement
/// of the connection.) Not `Send`: it marks the thread it was made on.
pub(super) struct ReadsOnly {
    /// The mark before this one, put back on drop.
    before: bool,
    _thread_bound: std::marker::PhantomData<*const ()>,
}

impl ReadsOnly {
    pub(super) fn new() -> Self {
        ReadsOnly {
            before: READS_ONLY.replace(true),
            _thread_bound: std::marker::PhantomData,
        }
    }
}

impl Drop for ReadsOnly {
    fn drop(&mut self) {
        READS_ONLY.set(self.before);
    }
}

/// The error a read-only connection gives a statement that would write.
fn refused_write(sql: &str) -> StoreError {
    StoreError::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
        Some(format!("a read may not write: {sql}")),
    ))
}

/// `sql` prepared (or taken from the cache), unless it would write during a
/// read ([`ReadsOnly`]).
fn prepared<'c>(
    c: &'c rusqlite::Connection,
    sql: &str,
) -> Result<rusqlite::CachedStatement<'c>, StoreError> {
    let stmt = c.prepare_cached(sql)?;
    if READS_ONLY.get() && !stmt.readonly() {
        return Err(refused_write(sql));
    }
    Ok(stmt)
}

/// An open connection the store owns: the writer's, or one of the read pool's.
pub(crate) enum Database {
    Sqlite(rusqlite::Connection),
    Postgres(Box<PgConn>),
}

impl Database {
    /// Whether the connection is gone (a PostgreSQL server that went away).
    pub(crate) fn is_broken(&self) -> bool {
        match self {
            Database::Sqlite(_) => false,
            Database::Postgres(p) => p.is_closed(),
        }
    }

    pub(crate) fn conn(&self) -> Conn<'_> {
        match self {
            Database::Sqlite(c) => Conn::Sqlite(c),
            Database::Postgres(p) => Conn::Postgres(p),
        }
    }
}

/// A connection to either database, as the layer files use it. Cheap to copy.
#[derive(Clone, Copy)]
pub(crate) enum Conn<'c> {
    Sqlite(&'c rusqlite::Connection),
    Postgres(&'c PgConn),
}

impl<'c> Conn<'c> {
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs a statement; returns how many rows it changed.
    pub(super) fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<usize, StoreError> {
        match self {
            Conn::Sqlite(c) => Ok(prepared(c, sql)?.execute(rusqlite::params_from_iter(params))?),
            Conn::Postgres(p) => {
                let stmt = p.statement(sql)?;
                let params: Vec<&(dyn PgToSql + Sync)> =
                    params.iter().map(|v| v as &(dyn PgToSql + Sync)).collect();
                let n = p.client().execute(&stmt, &params)?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// Calls `f` with each row of the answer, in order; stops at its first error.
    pub(super) fn each(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut f: impl FnMut(&Row<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        match self {
            Conn::Sqlite(c) => {
                let mut stmt = prepared(c, sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
                while let Some(r) = rows.next()? {
                    f(&Row::Sqlite(r))?;
                }
                Ok(())
            }
            Conn::Postgres(p) => {
                // Read whole before `f` sees a row: `f` may query again (a
                // search document reads its entity's observations).
                for r in p.query(sql, params)? {
                    f(&Row::Postgres(&r))?;
                }
                Ok(())
            }
        }
    }

    /// Every row of the answer, decoded by `f`.
    pub(super) fn rows<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut f: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        self.each(sql, params, |r| {
            out.push(f(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row of the answer, decoded by `f`, if there is one.
    pub(super) fn first<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        match self {
            Conn::Sqlite(c) => {
                let mut stmt = prepared(c, sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
                rows.next()?.map(|r| f(&Row::Sqlite(r))).transpose()
            }
            Conn::Postgres(p) => {
                let first = p.query(sql, params)?.into_iter().next();
                first.map(|r| f(&Row::Postgres(&r))).transpose()
            }
        }
    }

    /// The first column of the answer's one row (a count, a maximum).
    pub(super) fn value<T: Column>(
        &self,
        sql: &str,
        params: &[Value<'_>],
    ) -> Result<T, StoreError> {
        self.first(sql, params, |r| r.get(0))?
            .ok_or_else(|| StoreError::Corrupt(format!("no row answered {sql}")))
    }

    /// Runs `insert` (one row) and returns the new row's integer key, the
    /// column `key`. SQLite: the table's `INTEGER PRIMARY KEY` is its rowid,
    /// read back from the connection. (`RETURNING` buffers its rows in a
    /// temporary b-tree opened and closed per statement: it made an insert
    /// into the change log take twice as long, 4.9 against 2.5 µs.)
    /// PostgreSQL: `RETURNING key`.
    pub(super) fn insert_returning(
        &self,
        insert: &str,
        key: &str,
        params: &[Value<'_>],
    ) -> Result<i64, StoreError> {
        match self {
            Conn::Sqlite(c) => {
                prepared(c, insert)?.execute(rusqlite::params_from_iter(params))?;
                Ok(c.last_insert_rowid())
            }
            Conn::Postgres(_) => self.value(&format!("{insert} RETURNING {key}"), params),
        }
    }

    /// Runs statements separated by `;`, without parameters.
    pub(super) fn batch(&self, sql: &str) -> Result<(), StoreError> {
        match self {
            // Statements unchecked one by one: none during a read.
            Conn::Sqlite(_) if READS_ONLY.get() => Err(refused_write(sql)),
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(p) => Ok(p.client().batch_execute(sql)?),
        }
    }

    /// Whether a transaction is open on this connection. After some errors
    /// the database ends the transaction by itself (sqlite on a full disk or
    /// a lost lock, PostgreSQL when the connection is lost).
    pub(super) fn in_transaction(&self) -> bool {
        match self {
            Conn::Sqlite(c) => !c.is_autocommit(),
            Conn::Postgres(p) => p.in_transaction.get() && !p.is_closed(),
        }
    }

    /// Opens a transaction that logs no changes (so takes no write lock).
    pub(super) fn begin(&self) -> Result<(), StoreError> {
        self.batch("BEGIN")?;
        if let Conn::Postgres(p) = self {
            p.in_transaction.set(true);
        }
        Ok(())
    }

    /// Opens the write transaction. On PostgreSQL it first takes the store's
    /// write lock, so the transactions of every node commit one at a time and
    /// change numbers are handed out in commit order (see `pg.rs`). READ
    /// COMMITTED whatever the server's default: under REPEATABLE READ the
    /// snapshot would be taken before the lock is granted, and a write would
    /// read what the previous holder's commit changed as it was before.
    pub(super) fn begin_write(&self) -> Result<(), StoreError> {
        match self {
            Conn::Sqlite(_) if READS_ONLY.get() => Err(refused_write("BEGIN IMMEDIATE")),
            Conn::Sqlite(c) => Ok(c.execute_batch("BEGIN IMMEDIATE")?),
            Conn::Postgres(p) => {
                let begun = p.client().batch_execute(
                    "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(7365836)",
                );
                if let Err(e) = begun {
                    // The lock may have failed after BEGIN: leave no
                    // transaction open (on a lost connection this fails too).
                    let _ = p.client().batch_execute("ROLLBACK");
                    return Err(e.into());
                }
                p.in_transaction.set(true);
                Ok(())
            }
        }
    }

    /// Tells the nodes sharing the store that this transaction logged
    /// changes (delivered when it commits; see `follow.rs`). Nothing on sqlite.
    pub(super) fn announce(&self) -> Result<(), StoreError> {
        match self {
            Conn::Sqlite(_) => Ok(()),
            Conn::Postgres(_) => self.batch(&format!("NOTIFY {}", super::follow::CHANNEL)),
        }
    }

    /// Ends the open transaction with `COMMIT` or `ROLLBACK`.
    pub(super) fn end(&self, commit: bool) -> Result<(), StoreError> {
        let sql = if commit { "COMMIT" } else { "ROLLBACK" };
        let out = self.batch(sql);
        if let Conn::Postgres(p) = self {
            p.in_transaction.set(false);
        }
        out
    }
}

/// A statement in sqlite's spelling of parameters (`?1`, or `?` for the next
/// one) in PostgreSQL's (`$1`). Quoted text and identifiers are left alone.
pub(super) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut highest = 0u32;
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                out.push(c);
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let n = digits.parse().unwrap_or(highest + 1);
                highest = highest.max(n);
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_numbered_as_sqlite_numbers_them() {
        assert_eq!(numbered("a = ?1 AND b = ?2"), "a = $1 AND b = $2");
        assert_eq!(numbered("a = ? AND b = ?"), "a = $1 AND b = $2");
        assert_eq!(
            numbered("a = ?2 AND b = ? AND c = ?1"),
            "a = $2 AND b = $3 AND c = $1"
        );
        assert_eq!(
            numbered("x LIKE ? ESCAPE '\\' AND y = '?' AND \"q?\" = ?"),
            "x LIKE $1 ESCAPE '\\' AND y = '?' AND \"q?\" = $2"
        );
    }
}
