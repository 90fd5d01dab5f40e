-- Batched statements read their rows from one JSON array. jsonb_array_elements is estimated at
-- 100 rows whatever the batch, so the planner may hash-join a whole table (a sequential scan) to
-- touch one row, or probe an index a thousand times where a scan would do. The store calls the
-- wrapper whose estimate matches the batch's size class, so each prepared statement gets a plan
-- fit for it at any table size. (SET keeps them from being inlined, which would bring the
-- estimate of 100 back.)
CREATE FUNCTION niyanta_rows(batch jsonb) RETURNS SETOF jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 10 SET search_path = pg_catalog
    AS 'SELECT jsonb_array_elements(batch)';

CREATE FUNCTION niyanta_many_rows(batch jsonb) RETURNS SETOF jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 1000 SET search_path = pg_catalog
    AS 'SELECT jsonb_array_elements(batch)';

CREATE FUNCTION niyanta_texts(batch jsonb) RETURNS SETOF text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 10 SET search_path = pg_catalog
    AS 'SELECT jsonb_array_elements_text(batch)';

CREATE FUNCTION niyanta_many_texts(batch jsonb) RETURNS SETOF text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 1000 SET search_path = pg_catalog
    AS 'SELECT jsonb_array_elements_text(batch)';
