"""The base everything imports, without Ray: config models and loading, storage URIs and filesystems, the console,
lineage and secret redaction."""
