-- The latest do-not-call listing, read in O(log n): while contacts are claimed ahead, the engine
-- looks for listings made from outside the service (the CLI) every few tens of milliseconds, and
-- gives its contacts claimed ahead back when there is one (see Engine._check_listings).
CREATE INDEX dnc_numbers_added ON dnc_numbers (added_at);
