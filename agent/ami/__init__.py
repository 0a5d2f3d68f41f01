"""The AMI link: panoramisk wrapper and FastAGI hooks."""
