"""Connecting to Ray, storage URIs and filesystems, config loading, job submission and the CLI."""
