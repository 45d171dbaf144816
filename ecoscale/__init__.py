"""ecoscale: a carbon-aware microservice autoscaler that keeps old servers in service."""

__version__ = "0.1.0"
