"""MLflow, written from the driver only: the store, one run per trial, and the spool that survives outages."""
