-- The variant of a step's A/B test a decision was assigned to (the
-- decision's optional variant field, a name from the flows file); '' for
-- the decisions of steps without variants, and for every row from before
-- this migration. ClickHouse adds the column without rewriting a part:
-- old parts read the default.
ALTER TABLE decisions ADD COLUMN variant String DEFAULT '';
