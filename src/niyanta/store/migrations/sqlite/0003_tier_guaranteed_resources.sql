-- A tier guarantees cpu (cores) and memory (MB) as well as slots (docs/tiers.md, "Guaranteed
-- capacity"); 0 guarantees none.
ALTER TABLE tiers ADD COLUMN guaranteed_cpu REAL NOT NULL DEFAULT 0;
ALTER TABLE tiers ADD COLUMN guaranteed_memory_mb INTEGER NOT NULL DEFAULT 0;
