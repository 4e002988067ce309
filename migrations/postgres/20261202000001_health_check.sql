-- Health checks (issue 11): the check spec declared with an instance (JSON, NULL when it has
-- none), and the output and time of the check that last set its health (NULL when none did).
-- Events carry the same columns, so watchers see the instance whole.
ALTER TABLE mesh_instances ADD COLUMN health_check TEXT, ADD COLUMN check_output TEXT,
    ADD COLUMN checked_at_ms BIGINT;
ALTER TABLE mesh_events ADD COLUMN health_check TEXT, ADD COLUMN check_output TEXT,
    ADD COLUMN checked_at_ms BIGINT;
