"""SMS text: encoding, numbers, links, policies."""
