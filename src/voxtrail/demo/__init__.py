"""Demo data and the `voxtrail demo` command."""
