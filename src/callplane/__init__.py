"""callplane: an open-source programmable-voice platform (Restcomm 2012-04-24 API and RCML)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
