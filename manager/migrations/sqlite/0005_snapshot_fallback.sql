-- The fallback for hypervisors without backup jobs (keep in step with ../postgres/0005_snapshot_fallback.sql):
-- how each connection takes its point-in-time copies, and the disk-only snapshots whose
-- overlays are still to be committed back into their images.

-- 'backup': pull-mode backup jobs; 'snapshot': external disk-only snapshot + active commit;
-- 'auto': backup jobs, or the snapshot where the hypervisor has no backup jobs.
ALTER TABLE hypervisors ADD COLUMN method TEXT NOT NULL DEFAULT 'auto'
    CHECK (method IN ('auto', 'backup', 'snapshot'));

-- A disk-only snapshot taken for a VM job whose overlays have not all been committed back
-- yet (the scan ended, its manager died, or the VM was shut off before the commit). Removed
-- once every overlay named by its tag is committed and deleted.
CREATE TABLE vm_overlays (
    tag TEXT PRIMARY KEY,
    vm_job INTEGER NOT NULL,
    hypervisor TEXT NOT NULL,
    -- The connection's URI when the snapshot was taken.
    uri TEXT NOT NULL,
    uuid TEXT NOT NULL,
    name TEXT NOT NULL,
    -- JSON: the snapshot's plan (tag, NBD server).
    plan TEXT NOT NULL,
    since INTEGER NOT NULL,
    tries INTEGER NOT NULL DEFAULT 0,
    next_try INTEGER NOT NULL,
    last_error TEXT
);
