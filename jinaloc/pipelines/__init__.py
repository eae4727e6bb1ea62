"""The task adapters at work on lists of texts: rerank, classify, cluster, dedup.

Each module takes an `Embedder` (or vectors it produced) and picks the adapter and prompt the
task needs; the `jinaloc` shell commands in `jinaloc.cli.pipes` stream stdin through them."""
