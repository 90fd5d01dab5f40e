-- How long a tier's last-used guaranteed capacity stays held for it after its replicas end
-- (docs/tiers.md, "Guaranteed capacity"); 0 lends it out at once. The shipped platinum and gold
-- tiers get the values of niyanta.model.DEFAULT_TIERS.
ALTER TABLE tiers ADD COLUMN guarantee_linger_s DOUBLE PRECISION NOT NULL DEFAULT 0;
UPDATE tiers SET guarantee_linger_s = 1.0 WHERE name = 'platinum';
UPDATE tiers SET guarantee_linger_s = 0.5 WHERE name = 'gold';
