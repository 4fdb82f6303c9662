"""Transports that drive the sans-IO replica: ZeroMQ gossip and a simulated network."""
