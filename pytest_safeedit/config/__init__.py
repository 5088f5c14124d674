"""Run settings resolved from options (device, dtype, generation), and where models come from."""
