-- Session handles shared by every node (store/handles.rs): a handle's session,
-- found by the SHA-256 of the handle, and its working memory.
CREATE TABLE session_handles (
    key         TEXT COLLATE "C" PRIMARY KEY,
    session_id  TEXT NOT NULL,
    namespace   TEXT COLLATE "C" NOT NULL,
    tools       TEXT NOT NULL,
    token_id    TEXT,
    token_label TEXT,
    token_scope TEXT,
    created_at  BIGINT NOT NULL,
    used_at     BIGINT NOT NULL
);
CREATE INDEX session_handles_used ON session_handles (used_at);

CREATE TABLE session_scratch (
    handle TEXT COLLATE "C" NOT NULL REFERENCES session_handles (key) ON DELETE CASCADE,
    key    TEXT COLLATE "C" NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (handle, key)
);
