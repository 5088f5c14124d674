"""Judges: the Judge protocol and Verdict, the refusal rules, classifiers, guard models and their formats, the registry that builds them from specs, labelled data."""
