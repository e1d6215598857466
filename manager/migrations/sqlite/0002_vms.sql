-- coldscan-manager schema 2, SQLite dialect (keep in step with ../postgres/0002_vms.sql):
-- hypervisor connections, the VM inventory kept in sync with them, per-VM policy, and VM scan
-- jobs (a point-in-time backup of a running VM whose disks are scanned as ordinary jobs).

-- A libvirt connection the manager keeps the inventory of.
CREATE TABLE hypervisors (
    name TEXT PRIMARY KEY,
    uri TEXT NOT NULL,
    -- VM backups open at once on this connection.
    max_backups INTEGER NOT NULL DEFAULT 4,
    -- Address the backups' NBD servers listen on (on the hypervisor host); NULL: serve's
    -- --nbd-listen, else a unix socket for a scanner on the same host.
    nbd_listen TEXT,
    created INTEGER NOT NULL,
    last_sync INTEGER,
    last_error TEXT
);

-- Backups open at once on one storage pool of a connection (default: serve's --pool-backups).
CREATE TABLE pool_limits (
    hypervisor TEXT NOT NULL,
    pool TEXT NOT NULL,
    max_backups INTEGER NOT NULL,
    PRIMARY KEY (hypervisor, pool)
);

-- One VM, keyed by its UUID: a rename changes `name`, a migration `hypervisor`; policy stays.
CREATE TABLE vms (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hypervisor TEXT NOT NULL,
    state TEXT NOT NULL,
    disks TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    -- When its connection stopped listing it (NULL while listed).
    gone INTEGER,
    -- Policy: scan every `scan_interval` seconds (NULL: on demand only), only inside the UTC
    -- window [window_start, window_end) in minutes of the day (NULL: any time), labels.
    scan_interval INTEGER,
    window_start INTEGER,
    window_end INTEGER,
    labels TEXT NOT NULL DEFAULT '[]',
    -- What a detection in one of its scans triggers: 'report' (nothing more) or 'quarantine'
    -- (its network cut through libvirt, see 0004_quarantine.sql).
    on_detection TEXT NOT NULL DEFAULT 'report' CHECK (on_detection IN ('report', 'quarantine')),
    next_scan INTEGER
);
CREATE INDEX vms_hypervisor ON vms (hypervisor, name);

-- What the inventory saw happen: created, renamed, migrated, state, gone, back.
CREATE TABLE vm_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL,
    at INTEGER NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX vm_events_uuid ON vm_events (uuid, id);

-- A scan of one VM: queued, then running while its backup is open, then done or failed.
CREATE TABLE vm_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    created INTEGER NOT NULL,
    -- Disk jobs only for this appliance.
    appliance TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 2,
    -- While running: where its backup is open, by which manager, and what to clean up.
    hypervisor TEXT,
    pools TEXT,
    owner TEXT,
    owner_seen INTEGER,
    nbd_port INTEGER,
    backup TEXT,
    started INTEGER,
    finished INTEGER,
    error TEXT
);
CREATE INDEX vm_jobs_state ON vm_jobs (state, id);
CREATE INDEX vm_jobs_uuid ON vm_jobs (uuid, id);

-- Every backup begun and ended, in order (what the concurrency limits are checked against).
CREATE TABLE vm_job_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    vm_job INTEGER NOT NULL,
    at INTEGER NOT NULL,
    event TEXT NOT NULL,
    hypervisor TEXT,
    detail TEXT NOT NULL
);

-- A disk job of a VM job: its appliance job reads one disk's export.
ALTER TABLE jobs ADD COLUMN vm_job INTEGER;
ALTER TABLE jobs ADD COLUMN disk TEXT;
-- The VM job's attempt (backup) it belongs to.
ALTER TABLE jobs ADD COLUMN vm_attempt INTEGER;
CREATE INDEX jobs_vm_job ON jobs (vm_job);
