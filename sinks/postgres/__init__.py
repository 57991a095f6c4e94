"""PostgreSQL (and PostgreSQL-compatible warehouses) sink, on psycopg 3."""
