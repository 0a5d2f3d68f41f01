"""SMS gateways: SMPP 3.4 and HTTP drivers behind one Protocol."""
