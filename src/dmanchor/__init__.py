"""dmanchor: Distributed Mobility Anchoring (draft-ietf-dmm-distributed-mobility-anchoring)."""

__version__ = "0.1.0"
