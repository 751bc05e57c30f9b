"""murmura: decentralized learning: server-client, hierarchical and peer-to-peer."""

__version__ = "0.1.0"
