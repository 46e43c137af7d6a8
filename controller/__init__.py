"""The route server's control plane: CRD models, translation, reconcile loop, writers, CLI."""
