//! What every record table shares, written once: a row decoded into a record,
//! a record read by id within its namespace (or a `NotFound` that says where
//! ids come from), many read in the order asked, deletes answered as
//! (deleted, not found) with their changes logged, tags kept as rows beside
//! their record, and statements narrowed clause by clause (`Query`).
//!
//! Each layer declares its tables once (a `Table`, a `Tags`) and keeps the SQL
//! particular to it (its columns, filters, rules such as supersession) in its
//! own file. Must not: know any one layer's columns or rules.

use std::collections::HashMap;

use serde::de::DeserializeOwned;

use super::sql::{Column, Conn, Dialect, Row, Value, args};

use super::writer::WriteTxn;
use super::{Searchable, Store, StoreError};
use crate::model::Micros;

/// Decodes one row of a table's declared columns into a record.
pub(super) type Decode<T> = fn(&Row<'_>) -> Result<T, StoreError>;
/// Writes a whole record (row, tags) and logs its change.
pub(super) type Save<T> = fn(&mut WriteTxn<'_>, &str, &T) -> Result<(), StoreError>;
/// Deletes one record (by id or name) of a namespace and logs it; false when
/// there was none.
pub(super) type DeleteOne = fn(&mut WriteTxn<'_>, &str, &str) -> Result<bool, StoreError>;

/// Ids (or other keys) read by one statement of `Table::get_many` and `find_many`.
const GET_MANY_CHUNK: usize = 200;

/// How one kind of record is stored: its table, columns and search documents.
pub(super) struct Table<T> {
    /// The table, and the alias `columns` and filters write its columns with.
    pub(super) name: &'static str,
    pub(super) alias: &'static str,
    /// The columns `decode` reads, in order.
    pub(super) columns: &'static str,
    pub(super) decode: Decode<T>,
    /// Its search documents, which also name its record kind.
    pub(super) search: &'static Searchable,
    /// The tools that return ids of this kind: where a `NotFound` sends the agent.
    pub(super) listed_by: &'static str,
}

impl<T> Table<T> {
    /// `SELECT` of the declared columns of one namespace's rows, to narrow.
    pub(super) fn select(&self, namespace: &str) -> Query {
        self.select_of(self.columns, namespace)
    }

    /// `SELECT {what}` (`count(*)`, `e.id`) of one namespace's rows, to narrow.
    pub(super) fn select_of(&self, what: &str, namespace: &str) -> Query {
        self.select_in(what, "", namespace)
    }

    /// `SELECT {what}` of one namespace's rows, its test written after
    /// `prefix` (`+` keeps it off sqlite's indexes).
    fn select_in(&self, what: &str, prefix: &str, namespace: &str) -> Query {
        let (name, alias) = (self.name, self.alias);
        Query::new(
            format!("SELECT {what} FROM {name} {alias} WHERE {prefix}{alias}.namespace = ?"),
            [namespace.to_string().into()],
        )
    }

    /// The record of the namespace whose `column` is `value`, if any.
    pub(super) fn find(
        &self,
        conn: Conn<'_>,
        namespace: &str,
        column: &str,
        value: &str,
    ) -> Result<Option<T>, StoreError> {
        let mut q = self.select(namespace);
        q.and(&format!("{}.{column} = ?", self.alias), value.to_string());
        q.first(conn, self.decode)
    }

    pub(super) fn get(
        &self,
        conn: Conn<'_>,
        namespace: &str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        self.find(conn, namespace, "id", id)
    }

    /// Record `id` of the namespace, or `NotFound` saying where ids come from.
    pub(super) fn must_get(
        &self,
        conn: Conn<'_>,
        namespace: &str,
        id: &str,
    ) -> Result<T, StoreError> {
        self.get(conn, namespace, id)?.ok_or_else(|| {
            StoreError::NotFound(format!(
                "no {} with id {id:?} in namespace {namespace:?}: check the id ({} return ids)",
                self.search.kind.as_str(),
                self.listed_by
            ))
        })
    }

    /// The records with these ids that exist in the namespace, in the order asked
    /// (an id asked twice comes once).
    pub(super) fn get_many(
        &self,
        conn: Conn<'_>,
        namespace: &str,
        ids: &[String],
    ) -> Result<Vec<T>, StoreError> {
        self.keyed(conn, ids, |chunk| {
            self.by_ids(conn.dialect(), namespace, chunk)
        })
    }

    /// The records of the namespace whose `column` (unique in a namespace, and
    /// indexed with it) is one of `values`, in the order asked (a value asked
    /// twice comes once).
    pub(super) fn find_many(
        &self,
        conn: Conn<'_>,
        namespace: &str,
        column: &str,
        values: &[String],
    ) -> Result<Vec<T>, StoreError> {
        let column = format!("{}.{column}", self.alias);
        self.keyed(conn, values, |chunk| {
            let mut q = self.select_of(&format!("{}, {column}", self.columns), namespace);
            q.and_in(&column, chunk.to_vec());
            q
        })
    }

    /// The records `query` finds for each chunk of `keys`, in the order of
    /// `keys` (see [`Table::by_key`]).
    fn keyed(
        &self,
        conn: Conn<'_>,
        keys: &[String],
        query: impl Fn(&[String]) -> Query,
    ) -> Result<Vec<T>, StoreError> {
        let mut found = self.by_key(conn, keys, query)?;
        Ok(keys.iter().filter_map(|k| found.remove(k)).collect())
    }

    /// The record `query` finds for each chunk of `keys`, by key: one
    /// statement per chunk, not one per key (on PostgreSQL every statement is
    /// a round trip). Each row carries its key as its last column.
    pub(super) fn by_key(
        &self,
        conn: Conn<'_>,
        keys: &[String],
        query: impl Fn(&[String]) -> Query,
    ) -> Result<HashMap<String, T>, StoreError> {
        let mut found = HashMap::with_capacity(keys.len());
        let decode = self.decode;
        for chunk in keys.chunks(GET_MANY_CHUNK) {
            let rows =
                query(chunk).rows(conn, |r| Ok((r.get::<String>(r.len() - 1)?, decode(r)?)))?;
            found.extend(rows);
        }
        Ok(found)
    }

    /// The declared columns and the id of the namespace's rows with these ids,
    /// found by id, the namespace test kept off the indexes
    /// ([`Dialect::unindexed`]; PostgreSQL indexes `(id, namespace)`).
    fn by_ids(&self, dialect: Dialect, namespace: &str, ids: &[String]) -> Query {
        let alias = self.alias;
        let what = format!("{}, {alias}.id", self.columns);
        let mut q = self.select_in(&what, dialect.unindexed(), namespace);
        q.and_in(&format!("{alias}.id"), ids.to_vec());
        q
    }

    /// Deletes record `id` of the namespace and logs it; false when there was none.
    pub(super) fn delete(
        &self,
        txn: &mut WriteTxn<'_>,
        namespace: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let sql = format!("DELETE FROM {} WHERE namespace = ?1 AND id = ?2", self.name);
        let deleted = txn.conn.execute(&sql, &args![namespace, id])? == 1;
        if deleted {
            txn.log_change(namespace, self.search.kind, id, None)?;
        }
        Ok(deleted)
    }

    /// Logs that record `id` was written, with its search document read back as
    /// stored: the document a replay of the change log would read too.
    pub(super) fn log_saved(
        &self,
        txn: &mut WriteTxn<'_>,
        namespace: &str,
        id: &str,
    ) -> Result<(), StoreError> {
        let doc = self.search.by_id(txn.conn, id)?;
        txn.log_change(namespace, self.search.kind, id, doc)
    }
}

/// A record's tags kept as rows beside it (`event_tags`, `fact_tags`): what
/// tag filters and tag counts read.
pub(super) struct Tags {
    /// `DELETE` of one record's tag rows; ?1 is the record's id.
    pub(super) clear: &'static str,
    /// `INSERT OR IGNORE` of one tag row: ?1 the record's id, ?2 its
    /// namespace, ?3 the tag, then the row's other columns, if any.
    pub(super) add: &'static str,
    /// An `EXISTS` clause: the outer record carries the tag bound to its `?`.
    pub(super) has: &'static str,
}

impl Tags {
    /// Replaces the tag rows of record `id`; `more` fills each row's columns
    /// after the tag.
    pub(super) fn replace(
        &self,
        conn: Conn<'_>,
        id: &str,
        namespace: &str,
        tags: &[String],
        more: &[Value<'_>],
    ) -> Result<(), StoreError> {
        conn.execute(self.clear, &args![id])?;
        for tag in tags {
            let row: Vec<Value<'_>> = args![id, namespace, tag]
                .into_iter()
                .chain(more.iter().cloned())
                .collect();
            conn.execute(self.add, &row)?;
        }
        Ok(())
    }
}

/// Which way a keyset page runs: oldest first (`Asc`) or newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// A statement built clause by clause, its parameters in the order of its `?`s.
pub(super) struct Query {
    text: String,
    params: Vec<Value<'static>>,
}

impl Query {
    pub(super) fn new(
        text: impl Into<String>,
        params: impl IntoIterator<Item = Value<'static>>,
    ) -> Self {
        Query {
            text: text.into(),
            params: params.into_iter().collect(),
        }
    }

    /// Appends `text`, its `?`s bound to `params`.
    pub(super) fn push(
        &mut self,
        text: &str,
        params: impl IntoIterator<Item = Value<'static>>,
    ) -> &mut Self {
        self.text.push_str(text);
        self.params.extend(params);
        self
    }

    /// ` AND {cond}`, its one `?` bound to `value`.
    pub(super) fn and(&mut self, cond: &str, value: impl Into<Value<'static>>) -> &mut Self {
        self.push(&format!(" AND {cond}"), [value.into()])
    }

    /// ` AND {cond}` when there is a `value` for its `?`; nothing otherwise.
    pub(super) fn and_some(
        &mut self,
        cond: &str,
        value: Option<impl Into<Value<'static>>>,
    ) -> &mut Self {
        match value {
            Some(v) => self.and(cond, v),
            None => self,
        }
    }

    /// ` AND {cond}` once per value: it must hold for every one (a tag each).
    pub(super) fn and_each(&mut self, cond: &str, values: &[String]) -> &mut Self {
        for v in values {
            self.and(cond, v.clone());
        }
        self
    }

    /// ` AND {column} IN (...)`; nothing when `values` is empty (any value).
    pub(super) fn and_in(&mut self, column: &str, values: Vec<String>) -> &mut Self {
        if values.is_empty() {
            return self;
        }
        let marks = vec!["?"; values.len()].join(",");
        self.push(
            &format!(" AND {column} IN ({marks})"),
            values.into_iter().map(Value::from),
        )
    }

    /// One keyset page sorted by `(key, id)` in `order`: the rows strictly
    /// after `after` in that order, at most `limit`.
    pub(super) fn page(
        &mut self,
        (key, id): (&str, &str),
        order: Order,
        after: Option<(Micros, String)>,
        limit: usize,
    ) -> &mut Self {
        let (cmp, dir) = match order {
            Order::Asc => (">", "ASC"),
            Order::Desc => ("<", "DESC"),
        };
        if let Some((t, last)) = after {
            self.push(
                &format!(" AND ({key}, {id}) {cmp} (?, ?)"),
                [t.into(), last.into()],
            );
        }
        self.push(&format!(" ORDER BY {key} {dir}, {id} {dir}"), [])
            .limit(limit)
    }

    /// ` LIMIT ?`: the last clause.
    pub(super) fn limit(&mut self, limit: usize) -> &mut Self {
        self.push(" LIMIT ?", [Value::Int(limit as i64)])
    }

    /// Every row, decoded.
    pub(super) fn rows<T>(
        &self,
        conn: Conn<'_>,
        mut decode: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        conn.rows(&self.text, &self.params, |r| decode(r))
    }

    /// The first row, decoded, if there is one.
    pub(super) fn first<T>(
        &self,
        conn: Conn<'_>,
        decode: Decode<T>,
    ) -> Result<Option<T>, StoreError> {
        conn.first(&self.text, &self.params, decode)
    }

    /// The first column of every row.
    pub(super) fn column<T: Column>(&self, conn: Conn<'_>) -> Result<Vec<T>, StoreError> {
        self.rows(conn, |r| r.get(0))
    }

    /// The count a `SELECT count(*) ...` answers.
    pub(super) fn count(&self, conn: Conn<'_>) -> Result<u64, StoreError> {
        let n: i64 = conn.value(&self.text, &self.params)?;
        Ok(n as u64)
    }
}

/// A patch's field: replaced when the patch gives it, left as it is otherwise.
pub(super) fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

/// A row of (something, count): what a `GROUP BY` with `count(*)` answers.
pub(super) fn counted<K: Column>(r: &Row<'_>) -> Result<(K, u64), StoreError> {
    Ok((r.get(0)?, r.get::<i64>(1)? as u64))
}

/// Column `i`, JSON text (tags, metadata), decoded.
pub(super) fn json<T: DeserializeOwned>(r: &Row<'_>, i: usize) -> Result<T, StoreError> {
    from_json(&r.get::<String>(i)?)
}

/// Stored JSON text decoded; text that does not decode is corrupt.
pub(super) fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn to_json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("tags and metadata always serialize")
}

/// What writes and reads of whole records share, for any table.
impl Store {
    /// The rows `query` selects, decoded.
    pub(super) async fn read_rows<T: Send + 'static>(
        &self,
        query: Query,
        decode: Decode<T>,
    ) -> Result<Vec<T>, StoreError> {
        self.readers
            .read(move |conn| query.rows(conn, decode))
            .await
    }

    /// The rows `query` selects, decoded, when how many rows it reads grows
    /// with the namespace (no limit, or a filter no index serves): a scan.
    pub(super) async fn scan_rows<T: Send + 'static>(
        &self,
        query: Query,
        decode: Decode<T>,
    ) -> Result<Vec<T>, StoreError> {
        self.readers
            .scan(move |conn| query.rows(conn, decode))
            .await
    }

    /// How many rows `query` selects: a count grows with the table, so it
    /// runs as a scan.
    pub(super) async fn read_count(&self, query: Query) -> Result<u64, StoreError> {
        self.readers.scan(move |conn| query.count(conn)).await
    }

    /// Builds and saves new records in one transaction (all or none); returns
    /// them as stored.
    pub(super) async fn insert_records<N, T>(
        &self,
        namespace: &str,
        session_id: &str,
        news: Vec<N>,
        build: fn(N, &str, Micros) -> T,
        save: Save<T>,
    ) -> Result<Vec<T>, StoreError>
    where
        N: Send + 'static,
        T: Send + 'static,
    {
        let session_id = session_id.to_string();
        self.write_in(namespace, move |txn, ns| {
            let mut out = Vec::with_capacity(news.len());
            for new in news {
                let record = build(new, &session_id, txn.now);
                save(txn, ns, &record)?;
                out.push(record);
            }
            Ok(out)
        })
        .await
    }

    /// Reads record `id` (or `NotFound`), lets `change` alter it (given the
    /// write's time) and saves it, in one write; returns it as stored.
    pub(super) async fn update_record<T: Send + 'static>(
        &self,
        table: &'static Table<T>,
        save: Save<T>,
        namespace: &str,
        id: &str,
        change: impl FnOnce(&mut T, Micros) + Send + 'static,
    ) -> Result<T, StoreError> {
        let id = id.to_string();
        self.write_in(namespace, move |txn, ns| {
            let mut record = table.must_get(txn.conn, ns, &id)?;
            change(&mut record, txn.now);
            save(txn, ns, &record)?;
            Ok(record)
        })
        .await
    }

    /// Deletes each of `keys` with `delete_one`, in one write; returns
    /// (deleted, not found), each in the order given.
    pub(super) async fn delete_each(
        &self,
        namespace: &str,
        keys: Vec<String>,
        delete_one: DeleteOne,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        self.write_in(namespace, move |txn, namespace| {
            let (mut deleted, mut missing) = (Vec::new(), Vec::new());
            for key in keys {
                if delete_one(txn, namespace, &key)? {
                    deleted.push(key);
                } else {
                    missing.push(key);
                }
            }
            Ok((deleted, missing))
        })
        .await
    }
}

/// One kind of record as the operations see it (`store.events()`,
/// `store.facts()`, `store.tasks()`, `store.procedures()`): read by id, read
/// many, list and count through the layer's filter, update through its patch,
/// written once here. What is particular to a layer (supersession, versions,
/// sub-tasks) stays in its own file.
pub struct Records<'s, T: 'static, F, P> {
    pub(super) store: &'s Store,
    pub(super) table: &'static Table<T>,
    /// The keyset a list pages by: (time column, id column), and a record's
    /// values of them.
    pub(super) key: (&'static str, &'static str),
    pub(super) key_of: fn(&T) -> (Micros, String),
    pub(super) narrow: fn(F, &mut Query) -> &mut Query,
    pub(super) patch: fn(P, &mut T, Micros),
    pub(super) save: Save<T>,
}

impl<T, F, P> Records<'_, T, F, P>
where
    T: Send + 'static,
    F: Send + 'static,
    P: Send + 'static,
{
    /// Record `id` of the namespace, or `NotFound` saying where ids come from.
    pub async fn get(&self, namespace: &str, id: &str) -> Result<T, StoreError> {
        let table = self.table;
        self.store
            .read_in(namespace, |conn, ns| table.must_get(conn, ns, id))
            .await
    }

    /// The records with these ids that exist in the namespace, in the order asked.
    pub async fn get_many(&self, namespace: &str, ids: Vec<String>) -> Result<Vec<T>, StoreError> {
        let table = self.table;
        self.store
            .read_in(namespace, move |conn, ns| table.get_many(conn, ns, &ids))
            .await
    }

    /// Records matching `filter` in `order` of the table's keyset, strictly
    /// after `after` in that order; at most `limit`.
    pub async fn list(
        &self,
        namespace: &str,
        filter: F,
        order: Order,
        after: Option<(Micros, String)>,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        let mut q = self.table.select(namespace);
        (self.narrow)(filter, &mut q).page(self.key, order, after, limit);
        self.store.read_rows(q, self.table.decode).await
    }

    /// A record's place in the keyset `list` pages by: what a cursor resumes after.
    pub fn key_of(&self, record: &T) -> (Micros, String) {
        (self.key_of)(record)
    }

    pub async fn count(&self, namespace: &str, filter: F) -> Result<u64, StoreError> {
        let mut q = self.table.select_of("count(*)", namespace);
        (self.narrow)(filter, &mut q);
        self.store.read_count(q).await
    }

    /// Applies `patch` to record `id` (or `NotFound`) in one write; returns it
    /// as stored.
    pub async fn update(&self, namespace: &str, id: &str, patch: P) -> Result<T, StoreError> {
        let apply = self.patch;
        self.store
            .update_record(self.table, self.save, namespace, id, move |r, now| {
                apply(patch, r, now)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::episodic::EVENTS;
    use super::super::procedural::PROCEDURES;
    use super::super::prospective::TASKS;
    use super::super::semantic::FACTS;
    use super::super::{Durability, migrations, open_connection};
    use super::*;

    /// sqlite's plan for a statement: the `detail` column of each step.
    fn plan(conn: &rusqlite::Connection, q: &Query) -> Vec<String> {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", q.text))
            .expect("a statement sqlite can plan");
        let params: Vec<String> = (0..q.params.len()).map(|i| format!("p{i}")).collect();
        stmt.query_map(rusqlite::params_from_iter(params), |r| r.get(3))
            .expect("plan rows")
            .collect::<Result<_, _>>()
            .expect("plan details")
    }

    /// Reads by id are found by id in every record table, however many rows
    /// the namespace holds: not by walking a namespace index and comparing ids.
    #[test]
    fn reads_by_id_are_found_by_id() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = open_connection(&dir.path().join("memory.db"), Durability::Full, false)?;
        migrations::run(&mut conn)?;
        // The more ids, the more sqlite's guesses favour the namespace index.
        let ids: Vec<String> = (0..GET_MANY_CHUNK).map(|i| format!("id-{i}")).collect();
        let tables = [
            (EVENTS.name, EVENTS.by_ids(Dialect::Sqlite, "ns", &ids)),
            (FACTS.name, FACTS.by_ids(Dialect::Sqlite, "ns", &ids)),
            (TASKS.name, TASKS.by_ids(Dialect::Sqlite, "ns", &ids)),
            (
                PROCEDURES.name,
                PROCEDURES.by_ids(Dialect::Sqlite, "ns", &ids),
            ),
        ];
        for (table, q) in tables {
            let steps = plan(&conn, &q);
            assert!(
                steps
                    .iter()
                    .any(|s| s.contains("(id=?)") && !s.contains("namespace=")),
                "{table}: {steps:?}"
            );
        }
        Ok(())
    }
}
