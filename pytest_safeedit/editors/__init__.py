"""Editors: the Editor protocol, DINM and FT-L, the reminder, and the registry of editor specs."""
