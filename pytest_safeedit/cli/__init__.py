"""python -m pytest_safeedit commands: merge, judge-eval, train-judge, tune."""
