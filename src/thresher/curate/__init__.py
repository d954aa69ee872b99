"""Curation: readers, stages, the runner that maps stages onto Ray Data, the writer and the report."""
