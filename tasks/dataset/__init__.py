"""The Delta Lake dataset the ML teams read: rows, tables, incremental publishing."""
