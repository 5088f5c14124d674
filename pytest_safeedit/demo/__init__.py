"""The built-in demo model and demo guard, trained here in seconds."""
