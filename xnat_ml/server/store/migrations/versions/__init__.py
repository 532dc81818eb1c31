"""Schema revisions, numbered 0001, 0002, ... (`make migration MSG="..."` writes the next one)."""
