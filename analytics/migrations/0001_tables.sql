-- The tables of cartlift's recovery analytics. Every table is a
-- ReplacingMergeTree ordered by the row's deterministic id: the sink
-- delivers at least once, a replay inserts the same ids again, and merges
-- keep one row per id. Queries that must count each row once before a
-- merge deduplicate with GROUP BY id / argMax (or FINAL).
--
-- No LowCardinality, DateTime64 or window functions: this runs on
-- ClickHouse 18.16 and on current releases. Times are UTC, whole seconds.

-- One row per decision on cart-decisions (cart.abandonment.decided).
-- No email address or name: the customer is its key only.
CREATE TABLE IF NOT EXISTS decisions (
    id String,
    decided_at DateTime,
    valid_until DateTime,
    flow String,
    step String,
    step_index UInt16,
    action String,
    template String,
    holdout UInt8,
    discount_percent Int64,
    discount_amount_minor Int64,
    discount_max_minor Int64,
    customer_key String,
    cart_id String,
    cart_type String,
    site String,
    channel String,
    currency String,
    legal_entity String,
    cart_value_minor Int64,
    item_count Int64,
    cart_version Int64,
    cart_created_at DateTime,
    cart_modified_at DateTime,
    marketing_consent UInt8,
    locale String,
    inserted_at DateTime
) ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(decided_at)
ORDER BY id;

-- One row per cart outcome on cart-outcomes: recovered, converted,
-- converted_holdout, lost, discarded, merged.
CREATE TABLE IF NOT EXISTS outcomes (
    id String,
    kind String,
    at DateTime,
    customer_key String,
    cart_id String,
    cart_type String,
    site String,
    channel String,
    currency String,
    value_minor Int64,
    order_id String,
    decision_id String,
    flow String,
    step String,
    holdout UInt8,
    decisions UInt16,
    since_decision_seconds Int64,
    inserted_at DateTime
) ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(at)
ORDER BY id;

-- One row per action result on cart-outcomes: email.sent, email.failed,
-- webhook.delivered, discount.issued, link.clicked, unsubscribed. No
-- customer key: the decision (decision_id) says whose it was, so an
-- erasure that deletes the decision leaves nothing personal here.
CREATE TABLE IF NOT EXISTS action_results (
    id String,
    kind String,
    at DateTime,
    decision_id String,
    cart_id String,
    flow String,
    step String,
    holdout UInt8,
    currency String,
    value_minor Int64,
    inserted_at DateTime
) ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(at)
ORDER BY id;

-- One row per erasure (an erased outcome): the customer key's 64-bit
-- xxhash, not the key, and the erasure's time. The sink drops records of
-- the key from before that time that arrive later (the topics are read
-- independently, by several members, and replayed), and keeps the
-- customer's data from after it.
CREATE TABLE IF NOT EXISTS erasures (
    key_hash UInt64,
    erased_at DateTime,
    inserted_at DateTime
) ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (key_hash, erased_at);
