"""One module per stage; each registers itself by ``name`` (see ``thresher.curate.stage``)."""
