-- Health checks (issue 11): the check spec declared with an instance (JSON, NULL when it has
-- none), and the output and time of the check that last set its health (NULL when none did).
-- Events carry the same columns, so watchers see the instance whole. TEXT, not VARCHAR: it
-- stays off the 65,535-byte row limit the VARCHAR columns already come close to.
ALTER TABLE mesh_instances ADD COLUMN health_check TEXT NULL, ADD COLUMN check_output TEXT NULL,
    ADD COLUMN checked_at_ms BIGINT NULL;
ALTER TABLE mesh_events ADD COLUMN health_check TEXT NULL, ADD COLUMN check_output TEXT NULL,
    ADD COLUMN checked_at_ms BIGINT NULL;
