-- coldscan-manager schema, SQLite dialect. Keep it in step with ../postgres/0001_schema.sql:
-- the same tables, columns and meanings; only the types differ.
-- Times are Unix seconds (INTEGER); report times are kept as posted (RFC 3339 text).

CREATE TABLE tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('appliance', 'admin')),
    hash TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL,
    revoked INTEGER
);

CREATE TABLE appliances (
    name TEXT PRIMARY KEY,
    last_heartbeat INTEGER NOT NULL,
    version TEXT NOT NULL,
    status TEXT NOT NULL,
    disks TEXT NOT NULL
);

CREATE TABLE scans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    appliance TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    received INTEGER NOT NULL,
    started TEXT NOT NULL,
    finished TEXT NOT NULL,
    seconds REAL NOT NULL,
    files INTEGER NOT NULL,
    detections INTEGER NOT NULL,
    not_scanned INTEGER NOT NULL,
    targets TEXT NOT NULL,
    report TEXT NOT NULL,
    UNIQUE (appliance, idempotency_key)
);

CREATE TABLE scan_targets (
    scan_id INTEGER NOT NULL REFERENCES scans (id),
    target TEXT NOT NULL,
    format TEXT NOT NULL
);
CREATE INDEX scan_targets_target ON scan_targets (target, scan_id);

CREATE TABLE detections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scan_id INTEGER NOT NULL REFERENCES scans (id),
    target TEXT NOT NULL,
    partition_index INTEGER NOT NULL,
    path TEXT NOT NULL,
    stream TEXT,
    size INTEGER NOT NULL,
    sha256 TEXT,
    signature TEXT NOT NULL
);
CREATE INDEX detections_target ON detections (target, id);
CREATE INDEX detections_signature ON detections (signature, id);

CREATE TABLE not_scanned (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scan_id INTEGER NOT NULL REFERENCES scans (id),
    target TEXT NOT NULL,
    partition_index INTEGER,
    path TEXT,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX not_scanned_target ON not_scanned (target, id);

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    appliance TEXT,
    state TEXT NOT NULL CHECK (state IN ('queued', 'claimed', 'done', 'failed')),
    created INTEGER NOT NULL,
    claimed_by TEXT,
    claims INTEGER NOT NULL DEFAULT 0,
    lease_expires INTEGER,
    finished INTEGER,
    report INTEGER,
    error TEXT
);
CREATE INDEX jobs_open ON jobs (state, id);

CREATE TABLE webhooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    created INTEGER NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id INTEGER NOT NULL REFERENCES webhooks (id),
    scan_id INTEGER NOT NULL REFERENCES scans (id),
    target TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    created INTEGER NOT NULL,
    delivered INTEGER,
    UNIQUE (webhook_id, scan_id, target)
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt);

CREATE TABLE sessions (
    hash TEXT PRIMARY KEY,
    token_id INTEGER NOT NULL REFERENCES tokens (id),
    csrf TEXT NOT NULL,
    expires INTEGER NOT NULL
);
