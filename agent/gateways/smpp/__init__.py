"""SMPP 3.4: pure PDU codec and asyncio client."""
