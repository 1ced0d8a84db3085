"""latam: publish/subscribe ingestion into an analytics store, served over HTTP."""

__version__ = "0.1.0"
