"""Defaults that the CLI's options show in `--help`, in a module that imports nothing.

The modules that use them (search, reranker, pipelines, watch) pull in numpy or sqlite;
keeping the numbers here lets `jinaloc --help` and each command's help start without them."""

# Coarse candidates per wanted result (search); see README "Defaults" for the measurements.
DEFAULT_OVERSAMPLE = 10

# Documents are cut to this many tokens (their start is kept): cost is linear in tokens, and on
# a 2-core CPU ~2 s score 3 candidates of 64 tokens at Q4_K_M, 1 of 256 (scripts/bench_rerank.py,
# docs/benchmarks.md). A grep line or a title fits whole.
DOC_TOKENS = 64

# `jinaloc cluster`: the most clusters tried when k is estimated.
DEFAULT_MAX_K = 20

# Text-matching cosine above which two texts count as near-duplicates. See the README: high
# on purpose, since merging two distinct notes costs more than missing a loose paraphrase.
DEFAULT_THRESHOLD = 0.9

# `jinaloc watch`: quiet time after the last file event before a batch is applied.
DEFAULT_DEBOUNCE_MS = 500
