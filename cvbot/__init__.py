"""cvbot's composition root, command line and server."""
__version__ = "0.1.0"
