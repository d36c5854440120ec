"""What the data stages build on: topic taxonomies, prompt plans, typed records, quality signals
and MinHash dedup."""
