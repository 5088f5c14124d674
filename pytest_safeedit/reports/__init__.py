"""Reports: JSON, Markdown, HTML, and a previous report as the baseline."""
