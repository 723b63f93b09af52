"""fvc: fake-video classification inside hard memory caps."""

__version__ = "0.1.0"
