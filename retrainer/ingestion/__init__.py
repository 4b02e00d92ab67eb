"""Label ingestion: safe `.npy` conversion, the ingest outcomes, zip checks and the data loader."""
