-- Batched statements read their rows from one JSON array. jsonb_array_elements is estimated at
-- 100 rows, so the planner hash-joins whole tables (sequential scans) to touch a few rows, and a
-- write costs more as the tables grow. These wrappers estimate few rows: batched statements
-- probe the primary key instead, at any table size. (SET keeps them from being inlined, which
-- would bring the estimate of 100 back.)
CREATE FUNCTION niyanta_rows(batch jsonb) RETURNS SETOF jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 10 SET search_path = pg_catalog
    AS 'SELECT jsonb_array_elements(batch)';

CREATE FUNCTION niyanta_texts(batch jsonb) RETURNS SETOF text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 10 SET search_path = pg_catalog
    AS 'SELECT jsonb_array_elements_text(batch)';
