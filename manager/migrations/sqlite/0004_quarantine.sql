-- Quarantine of libvirt domains: the ones isolated now (with the interface states to restore)
-- and the log of every action. Keep it in step with ../postgres/0011_quarantine.sql.

CREATE TABLE quarantines (
    uuid TEXT PRIMARY KEY,
    uri TEXT NOT NULL,
    name TEXT NOT NULL,
    -- JSON: the link state of every interface before the quarantine, live and persistent.
    previous TEXT NOT NULL,
    since INTEGER NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL
);

CREATE TABLE quarantine_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('quarantine', 'release')),
    uri TEXT NOT NULL,
    uuid TEXT NOT NULL,
    name TEXT NOT NULL,
    reason TEXT NOT NULL,
    -- JSON: interface link states before and after the action.
    state_before TEXT NOT NULL,
    state_after TEXT NOT NULL
);
CREATE INDEX quarantine_log_uuid ON quarantine_log (uuid, id);
