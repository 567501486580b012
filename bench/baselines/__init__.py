"""Designs the relay is measured against; each is written the way a user would start."""
