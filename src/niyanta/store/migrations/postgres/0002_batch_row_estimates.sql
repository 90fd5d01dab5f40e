-- Batched statements read their rows from one JSON array. jsonb_array_elements is estimated at
-- 100 rows, so the planner hash-joins whole tables (sequential scans) to touch a few rows: a
-- write then costs more as the tables grow. These wrappers estimate few rows, so batched
-- statements probe the primary key at any table size (measured no slower for batches of 200 or
-- 1,000 rows either). SET keeps them from being inlined, which would bring the 100 back.
CREATE FUNCTION niyanta_rows(batch jsonb) RETURNS SETOF jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 10 SET search_path = pg_catalog
    AS 'SELECT jsonb_array_elements(batch)';

CREATE FUNCTION niyanta_texts(batch jsonb) RETURNS SETOF text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 10 SET search_path = pg_catalog
    AS 'SELECT jsonb_array_elements_text(batch)';
