-- The signature database each appliance scans with, from its heartbeats (keep in step with
-- ../postgres/0006_appliance_signatures.sql): the manager's version of the database it fetched
-- and loaded, NULL while it uses its own (image-built) signatures or never said.
ALTER TABLE appliances ADD COLUMN signatures TEXT;
