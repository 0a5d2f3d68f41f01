"""Call tracking: AMI events in, call records out (pure)."""
