"""What we know of each source's API: URLs to ask for and how to read the answers (no I/O)."""
