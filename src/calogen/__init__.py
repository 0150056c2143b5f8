"""calogen."""
