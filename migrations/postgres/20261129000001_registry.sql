-- tower-mesh registry schema (PostgreSQL).
CREATE TABLE mesh_state (
    id BIGINT PRIMARY KEY,
    revision BIGINT NOT NULL,
    compacted BIGINT NOT NULL
);
INSERT INTO mesh_state (id, revision, compacted) VALUES (1, 0, 0);

CREATE TABLE mesh_instances (
    service TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    host TEXT NOT NULL,
    port BIGINT NOT NULL,
    scheme TEXT NOT NULL,
    version TEXT NOT NULL,
    weight BIGINT NOT NULL,
    zone TEXT,
    metadata TEXT NOT NULL,
    health TEXT NOT NULL,
    ttl_ms BIGINT,
    expires_at_ms BIGINT,
    lease_expired BIGINT NOT NULL DEFAULT 0,
    revision BIGINT NOT NULL,
    PRIMARY KEY (service, instance_id)
);
CREATE INDEX mesh_instances_revision ON mesh_instances (revision);
CREATE INDEX mesh_instances_expires ON mesh_instances (expires_at_ms);

CREATE TABLE mesh_events (
    revision BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    service TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    host TEXT,
    port BIGINT,
    scheme TEXT,
    version TEXT,
    weight BIGINT,
    zone TEXT,
    metadata TEXT,
    health TEXT
);
CREATE INDEX mesh_events_service ON mesh_events (service, revision);
