"""XML stream plumbing shared by every connection manager (c2s now, s2s and components later)."""
