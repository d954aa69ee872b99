"""Models shared by curation and training: resolving where a model lives (``pkg:NAME``, zipped packages, local
folders), sentence encoders and batch generation on an actor pool. ``pipelines`` and ``training`` both import it;
it imports only ``cluster``."""
