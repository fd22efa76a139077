-- How many transactions have recorded outcomes on this database. The dial log beside the
-- database (dialer.dialed) names the value it was written at: a database whose count is lower
-- is older than the file (a backup restored onto the same file, same inode), and lacks
-- outcomes the file no longer lists the attempts of; the file is then not trusted, and the
-- contacts left `dialing` are asked about, never given back as undialed. Older code does not
-- count: it writes no count in its dial log either, and a log without one is read as 0.
CREATE TABLE dial_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO dial_epoch (id, n) VALUES (1, 0);
