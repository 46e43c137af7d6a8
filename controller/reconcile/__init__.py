"""reconcile of the controller."""
