-- One row the engine writes while storage is failing, to learn when writes work again (an
-- empty transaction would succeed on a full disk).
CREATE TABLE heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at REAL NOT NULL
);
