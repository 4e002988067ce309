-- When an instance turned critical (its lease found lapsed by a sweep): the grace period before
-- it is deregistered counts from here. Instances already critical count from their deadline.
ALTER TABLE mesh_instances ADD COLUMN critical_since_ms BIGINT NULL,
    ADD KEY mesh_instances_critical (critical_since_ms);
UPDATE mesh_instances SET critical_since_ms = expires_at_ms WHERE lease_expired = 1;
