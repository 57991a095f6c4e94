"""MySQL / MariaDB sink, on PyMySQL."""
