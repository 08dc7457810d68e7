"""fedtee: federated learning in which every client proves with hardware who it is
and what code it runs."""

__version__ = "0.1.0"
