"""murmura: decentralized learning across server-client, hierarchical and peer-to-peer topologies."""

__version__ = "0.1.0"
