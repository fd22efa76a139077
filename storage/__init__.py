"""SQLite storage: connection and pragmas, numbered migrations, named queries, the Store."""
