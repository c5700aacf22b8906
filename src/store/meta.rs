//! What the store holds, counted: records, bytes and growth per kind and
//! namespace (meta_stats, meta_namespaces).

use super::sql::Dialect;
use super::table::Query;
use super::{Store, StoreError};
use crate::model::{Micros, RecordKind};

/// How one kind's records are counted: its table, the bytes a row holds (its
/// texts and JSON) and, for kinds that keep parts in other tables
/// (observations, versions, runs), aggregates of those parts' bytes per
/// namespace: `SELECT namespace, bytes ... GROUP BY namespace`, filtered by `?`
/// when one namespace is asked for. One pass over each table, no per-row
/// subqueries.
struct Counted {
    kind: RecordKind,
    table: &'static str,
    bytes: &'static str,
    parts: &'static [&'static str],
}

const COUNTED: [Counted; 7] = [
    Counted {
        kind: RecordKind::Event,
        table: "events",
        bytes: "length(x.content) + length(x.tags) + length(x.metadata)",
        parts: &[],
    },
    Counted {
        kind: RecordKind::Fact,
        table: "facts",
        bytes: "length(x.content) + length(x.tags) + length(x.metadata) + coalesce(length(x.source), 0)",
        parts: &[],
    },
    Counted {
        kind: RecordKind::Entity,
        table: "entities",
        bytes: "length(x.name) + length(x.entity_type) + length(x.properties)",
        parts: &[
            "SELECT e.namespace, sum(length(o.content)) FROM observations o \
                  JOIN entities e ON e.id = o.entity_id WHERE e.namespace = coalesce(?1, e.namespace) \
                  GROUP BY e.namespace",
        ],
    },
    Counted {
        kind: RecordKind::Relation,
        table: "relations",
        bytes: "length(x.from_name) + length(x.to_name) + length(x.relation_type) + length(x.properties)",
        parts: &[],
    },
    Counted {
        kind: RecordKind::Procedure,
        table: "procedures",
        bytes: "0",
        parts: &[
            "SELECT p.namespace, sum(length(v.body)) FROM procedure_versions v \
             JOIN procedures p ON p.id = v.procedure_id WHERE p.namespace = coalesce(?1, p.namespace) \
             GROUP BY p.namespace",
            "SELECT r.namespace, sum(coalesce(length(r.notes), 0) + 40) FROM procedure_runs r \
             WHERE r.namespace = coalesce(?1, r.namespace) GROUP BY r.namespace",
        ],
    },
    Counted {
        kind: RecordKind::Task,
        table: "tasks",
        bytes: "length(x.title) + coalesce(length(x.notes), 0) + length(x.tags) + length(x.metadata)",
        parts: &[],
    },
    Counted {
        kind: RecordKind::Trigger,
        table: "triggers",
        bytes: "length(x.body)",
        parts: &[],
    },
];

/// One kind's records in one namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct KindCount {
    pub namespace: String,
    pub kind: RecordKind,
    pub records: u64,
    /// Bytes of text and JSON the records hold (not counting indexes).
    pub bytes: u64,
    /// Stored since each of the `since` times asked for, in that order.
    pub added: Vec<u64>,
}

impl Store {
    /// Records, bytes and growth of every kind, per namespace (only
    /// `namespace` when given): one entry per kind and namespace that has
    /// records. `added` counts records stored since each of `since`.
    pub async fn kind_counts(
        &self,
        namespace: Option<String>,
        since: Vec<Micros>,
    ) -> Result<Vec<KindCount>, StoreError> {
        self.readers
            .scan(move |conn| {
                let mut out = Vec::new();
                for c in &COUNTED {
                    let added: String = since
                        .iter()
                        .map(|_| ", coalesce(sum(CASE WHEN x.created_at >= ? THEN 1 ELSE 0 END), 0)")
                        .collect();
                    let mut q = Query::new(
                        format!(
                            "SELECT x.namespace, count(*), coalesce(sum({}), 0){added} FROM {} x WHERE 1 = 1",
                            c.bytes, c.table
                        ),
                        since.iter().map(|&t| t.into()),
                    );
                    q.and_some("x.namespace = ?", namespace.clone())
                        .push(" GROUP BY x.namespace ORDER BY x.namespace", []);
                    let mut counts = q.rows(conn, |r| {
                        let n = |i| r.get::<i64>(i).map(|n| n.max(0) as u64);
                        Ok(KindCount {
                            namespace: r.get(0)?,
                            kind: c.kind,
                            records: n(1)?,
                            bytes: n(2)?,
                            added: (0..since.len()).map(|i| n(3 + i)).collect::<Result<_, _>>()?,
                        })
                    })?;
                    for sql in c.parts {
                        let part = Query::new(*sql, [namespace.clone().into()]);
                        for (ns, bytes) in part.rows(conn, |r| {
                            Ok((r.get::<String>(0)?, r.get::<Option<i64>>(1)?.unwrap_or(0)))
                        })? {
                            if let Some(k) = counts.iter_mut().find(|k| k.namespace == ns) {
                                k.bytes += bytes.max(0) as u64;
                            }
                        }
                    }
                    out.extend(counts);
                }
                Ok(out)
            })
            .await
    }

    /// When each namespace was last written (its newest audit row).
    pub async fn last_writes(&self) -> Result<Vec<(String, Micros)>, StoreError> {
        let q = Query::new(
            "SELECT namespace, max(at) FROM audit GROUP BY namespace ORDER BY namespace",
            [],
        );
        self.readers
            .scan(move |conn| q.rows(conn, |r| Ok((r.get(0)?, r.get(1)?))))
            .await
    }

    /// The database's size on disk: its pages, in bytes.
    pub async fn database_bytes(&self) -> Result<u64, StoreError> {
        self.readers
            .read(|conn| {
                let bytes: i64 = match conn.dialect() {
                    Dialect::Sqlite => conn.value(
                        "SELECT page_count * page_size \
                         FROM pragma_page_count(), pragma_page_size()",
                        &[],
                    )?,
                    Dialect::Postgres => {
                        conn.value("SELECT pg_database_size(current_database())", &[])?
                    }
                };
                Ok(bytes.max(0) as u64)
            })
            .await
    }
}
