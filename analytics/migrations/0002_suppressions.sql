-- One row per record on cart-suppressions: a step that came due and was
-- not sent (kind 'suppressed', cart.step.suppressed) or was deferred by
-- quiet hours (kind 'deferred', cart.step.deferred). The id is the
-- record's deterministic suppression_id or deferral_id; a step deferred
-- again carries the same id. stage is 'processor' (a guard: no decision
-- was made) or 'actions' (the decision was dropped: decision_id joins
-- with decisions); '' for a deferral. until is the epoch for a
-- suppression. Like the other tables, no LowCardinality, DateTime64 or
-- window functions: this runs on ClickHouse 18.16 and current releases.
CREATE TABLE IF NOT EXISTS suppressions (
    id String,
    kind String,
    reason String,
    stage String,
    decision_id String,
    into_decision_id String,
    flow String,
    step String,
    step_index UInt16,
    action String,
    holdout UInt8,
    customer_key String,
    cart_id String,
    cart_type String,
    site String,
    channel String,
    currency String,
    value_minor Int64,
    due_at DateTime,
    at DateTime,
    until DateTime,
    inserted_at DateTime
) ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(at)
ORDER BY id;
