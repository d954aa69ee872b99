"""The execution layer: the curation code that runs work on Ray (Ray Data, plain tasks, one-process tables)."""
