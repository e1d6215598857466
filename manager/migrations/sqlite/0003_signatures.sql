-- Signature databases held by the manager for its appliances, and the database each scan used.
-- Keep it in step with ../postgres/0010_signatures.sql.

-- One row per `coldscan-manager signatures set`: the newest row is the current database.
CREATE TABLE signature_sets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    created INTEGER NOT NULL
);

CREATE TABLE signature_files (
    set_id INTEGER NOT NULL REFERENCES signature_sets (id),
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    content BLOB NOT NULL,
    PRIMARY KEY (set_id, name)
);

-- The signature database a scan's report names (engine.db); NULL for older reports.
ALTER TABLE scans ADD COLUMN db_version INTEGER;
ALTER TABLE scans ADD COLUMN db_sha256 TEXT;
ALTER TABLE scans ADD COLUMN db_manager_version TEXT;
