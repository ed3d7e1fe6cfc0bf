-- The decisions of shadow flows (cart-decisions.shadow: flows with
-- shadow: true, evaluated live and never actioned), apart from the
-- decisions table, so that every query of decisions keeps its meaning.
-- Shaped like decisions, with the live flow the shadow flow is compared
-- with (shadow_of) and the end of the shadow flow's attribution window
-- (attribute_until: a checkout of the cart by then is what the shadow
-- flow would have been credited with). Read by cartlift report
-- --compare-shadow.
CREATE TABLE IF NOT EXISTS shadow_decisions (
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
    variant String,
    shadow_of String,
    attribute_until DateTime,
    inserted_at DateTime
) ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(decided_at)
ORDER BY id;
