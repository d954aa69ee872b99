"""Models shared by curation and training: resolving where a model lives (``pkg:NAME``, zipped packages, local
folders), sentence encoders and batch generation on an actor pool. ``curate``, ``train`` and ``evaluate``
import it; it imports only ``core``."""
