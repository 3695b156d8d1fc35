"""Storage: interfaces per area, a database layer over adbapi, SQL and memory backends."""
