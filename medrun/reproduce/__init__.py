"""`medrun reproduce`: paper tables (configs/reproduce/*.yaml) re-measured on the user's data, side by side."""
from medrun.reproduce.command import reproduce
from medrun.reproduce.tables import describe, load_table, table_names

__all__ = ["reproduce", "load_table", "table_names", "describe"]
