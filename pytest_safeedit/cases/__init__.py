"""The data model at the bottom of the house: cases, probes, suites, categories, gate thresholds, and the YAML and official formats."""
