"""writers of the controller."""
