"""Model Inference Server: many models behind one Falcon + gunicorn endpoint."""

__version__ = "0.1.0"
