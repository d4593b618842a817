-- The consents' change feed: every write of a consent takes the next number of one sequence,
-- under a transaction-level advisory lock, so the numbers follow the commit order. A replica
-- that lost the store's notifications reads the consents written after the last number it saw,
-- instead of every consent.
CREATE SEQUENCE consent_seq;
ALTER TABLE consents ADD COLUMN seq bigint NOT NULL DEFAULT nextval('consent_seq');
CREATE INDEX consents_seq ON consents (seq);
