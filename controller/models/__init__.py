"""Pydantic mirrors of the routeserver.dev/v1alpha1 CRDs (crds/ is the source of truth).

Owns: parsing and validating API objects (the CRDs' CEL rules re-implemented for files without an
API server) and writing them back as manifests. May not touch: the desired state beyond reusing its
enums (`Liveness`), the runtime, any I/O; translation (controller/translate.py) turns these into the
desired state.
"""
