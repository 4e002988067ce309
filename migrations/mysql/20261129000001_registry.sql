-- tower-mesh registry schema (MySQL / MariaDB). VARCHAR rather than TEXT, binary collation so
-- that ids compare exactly.
CREATE TABLE mesh_state (
    id BIGINT PRIMARY KEY,
    revision BIGINT NOT NULL,
    compacted BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
INSERT INTO mesh_state (id, revision, compacted) VALUES (1, 0, 0);

CREATE TABLE mesh_instances (
    service VARCHAR(253) NOT NULL,
    instance_id VARCHAR(128) NOT NULL,
    host VARCHAR(253) NOT NULL,
    port BIGINT NOT NULL,
    scheme VARCHAR(16) NOT NULL,
    version VARCHAR(128) NOT NULL,
    weight BIGINT NOT NULL,
    zone VARCHAR(128),
    metadata VARCHAR(10000) NOT NULL,
    health VARCHAR(16) NOT NULL,
    ttl_ms BIGINT,
    expires_at_ms BIGINT,
    lease_expired BIGINT NOT NULL DEFAULT 0,
    revision BIGINT NOT NULL,
    PRIMARY KEY (service, instance_id),
    KEY mesh_instances_revision (revision),
    KEY mesh_instances_expires (expires_at_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE mesh_events (
    revision BIGINT PRIMARY KEY,
    kind VARCHAR(8) NOT NULL,
    service VARCHAR(253) NOT NULL,
    instance_id VARCHAR(128) NOT NULL,
    host VARCHAR(253),
    port BIGINT,
    scheme VARCHAR(16),
    version VARCHAR(128),
    weight BIGINT,
    zone VARCHAR(128),
    metadata VARCHAR(10000),
    health VARCHAR(16),
    KEY mesh_events_service (service, revision)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
