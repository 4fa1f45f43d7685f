"""agegender: age and gender estimation from face images."""

__version__ = "0.1.0"
