"""The pipeline runtime: batch consumer loop, transform pipelines, supervisor."""
