"""The pytest glue: options, hooks, items, the aggregator, xdist and shards."""
