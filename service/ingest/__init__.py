"""Format readers: a file's bytes and name in, documents with checkable text out."""
