-- Passerelle's shared store, version 1. Applied once, in one transaction, by the first replica
-- that starts on an empty database (see gateway/src/store/postgres.rs, `migrate`).

-- Gateway metadata (the hash of the imported bundles, the store format).
CREATE TABLE meta (
    key   text  PRIMARY KEY,
    value bytea NOT NULL
);

-- The policy in force: one row. `version` only grows; a replica commits version N+1 only
-- while N is current (compare-and-set under a row lock).
CREATE TABLE policy_current (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    version  bigint  NOT NULL,
    document bytea   NOT NULL
);

-- One change entry per policy version: who, what, when, why.
CREATE TABLE policy_changes (
    version bigint PRIMARY KEY,
    change  bytea  NOT NULL
);

-- Consent records (JSON, as the embedded store keeps them); a revocation marks, never deletes.
CREATE TABLE consents (
    id       text  PRIMARY KEY,
    subject  text  NOT NULL,
    document bytea NOT NULL
);
CREATE INDEX consents_subject ON consents (subject);

-- The history of each consent: given, revalidated, revoked, imported.
CREATE TABLE consent_events (
    id         bigserial PRIMARY KEY,
    consent_id text      NOT NULL,
    event      bytea     NOT NULL
);
CREATE INDEX consent_events_consent ON consent_events (consent_id, id);

-- The audit indexes of every replica's trail. Each replica keeps its own hash chain on its
-- own disk; the index carries each record's canonical payload so that an auditor's or a
-- citizen's query on any replica sees the records of all of them. Few indexes, since every
-- call adds a row: the key (replica, seq), the calling organisation, a BRIN on time (records
-- arrive in time order per replica), and one key per subject that also serves its time order.
CREATE TABLE audit_records (
    replica text   NOT NULL,
    seq     bigint NOT NULL,
    time_ms bigint NOT NULL,
    caller  text,
    -- Where the record is in its replica's own trail (first seq of the segment, byte offset).
    segment bigint NOT NULL,
    "offset" bigint NOT NULL,
    payload bytea  NOT NULL,
    PRIMARY KEY (replica, seq)
);
CREATE INDEX audit_records_caller ON audit_records (caller, time_ms);
CREATE INDEX audit_records_time ON audit_records USING brin (time_ms);

CREATE TABLE audit_subjects (
    subject text   NOT NULL,
    time_ms bigint NOT NULL,
    replica text   NOT NULL,
    seq     bigint NOT NULL,
    PRIMARY KEY (subject, time_ms, replica, seq)
);
