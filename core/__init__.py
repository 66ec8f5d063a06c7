"""cvbot's engine: domain model, ports, linear probes on frozen embeddings, and the use cases.

Nothing is re-exported here: import from the defining module (`from core.usecases import UseCases`), so that
importing a light module (`core.errors`, `core.model`) does not load scikit-learn, SciPy or Pillow."""
