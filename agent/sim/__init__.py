"""SMSC / HTTP gateway simulator."""
