-- tower-mesh registry schema (SQLite).
CREATE TABLE mesh_state (
    id INTEGER PRIMARY KEY,
    revision INTEGER NOT NULL,
    compacted INTEGER NOT NULL
);
INSERT INTO mesh_state (id, revision, compacted) VALUES (1, 0, 0);

CREATE TABLE mesh_instances (
    service TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    scheme TEXT NOT NULL,
    version TEXT NOT NULL,
    weight INTEGER NOT NULL,
    zone TEXT,
    metadata TEXT NOT NULL,
    health TEXT NOT NULL,
    ttl_ms INTEGER,
    expires_at_ms INTEGER,
    lease_expired INTEGER NOT NULL DEFAULT 0,
    revision INTEGER NOT NULL,
    PRIMARY KEY (service, instance_id)
);
CREATE INDEX mesh_instances_revision ON mesh_instances (revision);
CREATE INDEX mesh_instances_expires ON mesh_instances (expires_at_ms);

CREATE TABLE mesh_events (
    revision INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    service TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    host TEXT,
    port INTEGER,
    scheme TEXT,
    version TEXT,
    weight INTEGER,
    zone TEXT,
    metadata TEXT,
    health TEXT
);
CREATE INDEX mesh_events_service ON mesh_events (service, revision);
