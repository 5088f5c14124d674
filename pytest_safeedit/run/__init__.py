"""Running probes: the engine (model, judge, caches, edits), the evaluator, and the handles users' tests get."""
