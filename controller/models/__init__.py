"""models of the controller."""
