"""cvbot's engine: domain model, ports, linear probes on frozen embeddings, and the service layer.

Nothing is re-exported here: import from the defining module (`from core.service import CvService`), so that
importing a light module (`core.errors`, `core.model`) does not load scikit-learn, SciPy or Pillow."""
