"""Indexing: chunk vectors, BM25, the versioned store and the build."""
