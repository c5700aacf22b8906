-- Text columns compare byte by byte (COLLATE "C"), as sqlite does, so that
-- ordering by name or tag is the same on either store whatever the database's
-- locale.
--
-- The change log and the audit trail grow without end: both are partitioned by
-- month of their time (`at`, microseconds since the epoch), so old months can be
-- detached and archived. Events are partitioned by month of `created_at` (when
-- they were stored, which never changes). Partitions are made ahead by the
-- nodes (`pg::ensure_partitions`); rows outside them land in `*_default`.
CREATE SEQUENCE changes_seq;
CREATE TABLE changes (
    seq        BIGINT NOT NULL DEFAULT nextval('changes_seq'),
    namespace  TEXT COLLATE "C"   NOT NULL,
    kind       TEXT COLLATE "C"   NOT NULL,
    record_id  TEXT COLLATE "C"   NOT NULL,
    op         TEXT COLLATE "C"   NOT NULL CHECK (op IN ('upsert', 'delete')),
    at         BIGINT NOT NULL,
    PRIMARY KEY (seq, at)
) PARTITION BY RANGE (at);
CREATE TABLE changes_default PARTITION OF changes DEFAULT;

CREATE SEQUENCE events_rowid;
CREATE TABLE events (
    id          TEXT COLLATE "C"             NOT NULL,
    namespace   TEXT COLLATE "C"             NOT NULL,
    content     TEXT COLLATE "C"             NOT NULL,
    tags        TEXT COLLATE "C"             NOT NULL DEFAULT '[]',
    importance  DOUBLE PRECISION NOT NULL,
    occurred_at BIGINT           NOT NULL,
    created_at  BIGINT           NOT NULL,
    updated_at  BIGINT           NOT NULL,
    metadata    TEXT COLLATE "C"             NOT NULL DEFAULT '{}',
    session_id  TEXT COLLATE "C"             NOT NULL,
    decayed_at  BIGINT,
    rowid       BIGINT           NOT NULL DEFAULT nextval('events_rowid'),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE events_default PARTITION OF events DEFAULT;
CREATE INDEX events_by_time ON events (namespace, occurred_at, id);
-- An event read by id within its namespace. Not left to the primary key: a
-- table not yet analysed guesses `namespace = ?` as selective as `id = ?`, and
-- then scans events_by_time's whole namespace for the id, which grows with it.
CREATE INDEX events_by_id ON events (id, namespace);
CREATE INDEX events_by_rowid ON events (namespace, rowid);
-- A partitioned table's key must hold the partition column, so no foreign key
-- can name `events (id)`: a trigger deletes an event's tags with it.
CREATE TABLE event_tags (
    event_id  TEXT COLLATE "C" NOT NULL,
    namespace TEXT COLLATE "C" NOT NULL,
    tag       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (event_id, tag)
);
CREATE INDEX event_tags_by_tag ON event_tags (namespace, tag, event_id);
CREATE FUNCTION engram_event_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM event_tags WHERE event_id = OLD.id;
    RETURN OLD;
END $$;
CREATE TRIGGER event_tags_follow AFTER DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION engram_event_deleted();

CREATE TABLE facts (
    id               TEXT COLLATE "C"             PRIMARY KEY,
    namespace        TEXT COLLATE "C"             NOT NULL,
    content          TEXT COLLATE "C"             NOT NULL,
    tags             TEXT COLLATE "C"             NOT NULL DEFAULT '[]',
    confidence       DOUBLE PRECISION NOT NULL,
    source           TEXT COLLATE "C",
    valid_from       BIGINT           NOT NULL,
    valid_to         BIGINT,
    created_at       BIGINT           NOT NULL,
    updated_at       BIGINT           NOT NULL,
    access_count     BIGINT           NOT NULL DEFAULT 0,
    last_accessed_at BIGINT,
    supersedes       TEXT COLLATE "C",
    superseded_by    TEXT COLLATE "C",
    metadata         TEXT COLLATE "C"             NOT NULL DEFAULT '{}',
    session_id       TEXT COLLATE "C"             NOT NULL,
    rowid            BIGSERIAL        NOT NULL
);
CREATE INDEX facts_by_created ON facts (namespace, created_at, id);
CREATE INDEX facts_by_rowid ON facts (namespace, rowid);
CREATE TABLE fact_tags (
    fact_id   TEXT COLLATE "C"   NOT NULL REFERENCES facts (id) ON DELETE CASCADE,
    namespace TEXT COLLATE "C"   NOT NULL,
    tag       TEXT COLLATE "C"   NOT NULL,
    current   BIGINT NOT NULL,
    PRIMARY KEY (fact_id, tag)
);
CREATE INDEX fact_tags_by_tag ON fact_tags (namespace, tag, fact_id);

CREATE TABLE entities (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT COLLATE "C"      NOT NULL UNIQUE,
    namespace   TEXT COLLATE "C"      NOT NULL,
    name        TEXT COLLATE "C"      NOT NULL,
    entity_type TEXT COLLATE "C"      NOT NULL,
    properties  TEXT COLLATE "C"      NOT NULL DEFAULT '{}',
    created_at  BIGINT    NOT NULL,
    updated_at  BIGINT    NOT NULL,
    rowid       BIGSERIAL NOT NULL,
    UNIQUE (namespace, name)
);
CREATE INDEX entities_by_rowid ON entities (namespace, rowid);
CREATE TABLE observations (
    entity_id  TEXT COLLATE "C"   NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
    position   BIGINT NOT NULL,
    content    TEXT COLLATE "C"   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (entity_id, content)
);
CREATE INDEX observations_in_order ON observations (entity_id, position);
CREATE TABLE relations (
    seq           BIGSERIAL PRIMARY KEY,
    namespace     TEXT COLLATE "C"      NOT NULL,
    from_name     TEXT COLLATE "C"      NOT NULL,
    to_name       TEXT COLLATE "C"      NOT NULL,
    relation_type TEXT COLLATE "C"      NOT NULL,
    properties    TEXT COLLATE "C"      NOT NULL DEFAULT '{}',
    valid_from    BIGINT,
    valid_to      BIGINT,
    created_at    BIGINT    NOT NULL,
    rowid         BIGSERIAL NOT NULL,
    UNIQUE (namespace, from_name, to_name, relation_type)
);
CREATE INDEX relations_by_to ON relations (namespace, to_name);
CREATE INDEX relations_by_rowid ON relations (namespace, rowid);

CREATE TABLE procedures (
    id          TEXT COLLATE "C"      PRIMARY KEY,
    namespace   TEXT COLLATE "C"      NOT NULL,
    name        TEXT COLLATE "C"      NOT NULL,
    version     BIGINT    NOT NULL,
    body        TEXT COLLATE "C"      NOT NULL,
    tags        TEXT COLLATE "C"      NOT NULL DEFAULT '[]',
    created_at  BIGINT    NOT NULL,
    updated_at  BIGINT    NOT NULL,
    runs        BIGINT    NOT NULL DEFAULT 0,
    successes   BIGINT    NOT NULL DEFAULT 0,
    partials    BIGINT    NOT NULL DEFAULT 0,
    failures    BIGINT    NOT NULL DEFAULT 0,
    last_run_at BIGINT,
    rowid       BIGSERIAL NOT NULL,
    UNIQUE (namespace, name)
);
CREATE INDEX procedures_by_updated ON procedures (namespace, updated_at, id);
CREATE INDEX procedures_by_rowid ON procedures (namespace, rowid);
CREATE TABLE procedure_tags (
    procedure_id TEXT COLLATE "C" NOT NULL REFERENCES procedures (id) ON DELETE CASCADE,
    namespace    TEXT COLLATE "C" NOT NULL,
    tag          TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (procedure_id, tag)
);
CREATE INDEX procedure_tags_by_tag ON procedure_tags (namespace, tag, procedure_id);
CREATE TABLE procedure_versions (
    procedure_id TEXT COLLATE "C"   NOT NULL REFERENCES procedures (id) ON DELETE CASCADE,
    version      BIGINT NOT NULL,
    body         TEXT COLLATE "C"   NOT NULL,
    PRIMARY KEY (procedure_id, version)
);
CREATE TABLE procedure_runs (
    id           TEXT COLLATE "C"   PRIMARY KEY,
    procedure_id TEXT COLLATE "C"   NOT NULL REFERENCES procedures (id) ON DELETE CASCADE,
    namespace    TEXT COLLATE "C"   NOT NULL,
    version      BIGINT NOT NULL,
    outcome      TEXT COLLATE "C"   NOT NULL,
    duration_ms  BIGINT,
    notes        TEXT COLLATE "C",
    at           BIGINT NOT NULL,
    session_id   TEXT COLLATE "C"   NOT NULL
);
CREATE INDEX procedure_runs_in_order ON procedure_runs (procedure_id, at, id);

CREATE TABLE tasks (
    id          TEXT COLLATE "C"      PRIMARY KEY,
    namespace   TEXT COLLATE "C"      NOT NULL,
    title       TEXT COLLATE "C"      NOT NULL,
    notes       TEXT COLLATE "C",
    status      TEXT COLLATE "C"      NOT NULL,
    priority    BIGINT    NOT NULL,
    due_at      BIGINT,
    tags        TEXT COLLATE "C"      NOT NULL DEFAULT '[]',
    parent_id   TEXT COLLATE "C",
    metadata    TEXT COLLATE "C"      NOT NULL DEFAULT '{}',
    created_at  BIGINT    NOT NULL,
    updated_at  BIGINT    NOT NULL,
    closed_at   BIGINT,
    session_id  TEXT COLLATE "C"      NOT NULL,
    rowid       BIGSERIAL NOT NULL
);
CREATE INDEX tasks_by_created ON tasks (namespace, created_at, id);
CREATE INDEX tasks_by_due ON tasks (namespace, status, due_at);
CREATE INDEX tasks_by_parent ON tasks (parent_id, created_at, id);
CREATE INDEX tasks_by_urgency ON tasks (namespace, status, priority DESC, due_at, id);
CREATE INDEX tasks_by_rowid ON tasks (namespace, rowid);
CREATE TABLE task_tags (
    task_id   TEXT COLLATE "C" NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    namespace TEXT COLLATE "C" NOT NULL,
    tag       TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (task_id, tag)
);
CREATE INDEX task_tags_by_tag ON task_tags (namespace, tag, task_id);
CREATE TABLE triggers (
    id         TEXT COLLATE "C"      PRIMARY KEY,
    namespace  TEXT COLLATE "C"      NOT NULL,
    body       TEXT COLLATE "C"      NOT NULL,
    watching   BIGINT    NOT NULL,
    at         BIGINT,
    created_at BIGINT    NOT NULL,
    rowid      BIGSERIAL NOT NULL
);
CREATE INDEX triggers_watching ON triggers (namespace, watching);
CREATE INDEX triggers_by_rowid ON triggers (namespace, rowid);

CREATE SEQUENCE audit_seq;
CREATE TABLE audit (
    seq        BIGINT NOT NULL DEFAULT nextval('audit_seq'),
    namespace  TEXT COLLATE "C"   NOT NULL,
    at         BIGINT NOT NULL,
    operation  TEXT COLLATE "C"   NOT NULL,
    session_id TEXT COLLATE "C"   NOT NULL,
    records    TEXT COLLATE "C"   NOT NULL,
    token      TEXT COLLATE "C",
    PRIMARY KEY (seq, at)
) PARTITION BY RANGE (at);
CREATE TABLE audit_default PARTITION OF audit DEFAULT;
CREATE INDEX audit_by_namespace ON audit (namespace, seq);

CREATE TABLE archived_events (
    id          TEXT COLLATE "C"      PRIMARY KEY,
    namespace   TEXT COLLATE "C"      NOT NULL,
    body        TEXT COLLATE "C"      NOT NULL,
    archived_at BIGINT    NOT NULL,
    rowid       BIGSERIAL NOT NULL
);
CREATE INDEX archived_events_by_namespace ON archived_events (namespace, archived_at);
CREATE INDEX archived_events_by_rowid ON archived_events (namespace, rowid);

CREATE TABLE tokens (
    id           TEXT COLLATE "C"      PRIMARY KEY,
    label        TEXT COLLATE "C"      NOT NULL UNIQUE,
    namespace    TEXT COLLATE "C"      NOT NULL,
    scope        TEXT COLLATE "C"      NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    secret_hash  BYTEA     NOT NULL,
    created_at   BIGINT    NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT,
    rowid        BIGSERIAL NOT NULL
);

-- Secrets every node must share (the key cursors are signed with), made once
-- by whichever node asks first.
CREATE TABLE secrets (
    name  TEXT COLLATE "C" PRIMARY KEY,
    value BYTEA NOT NULL
);
