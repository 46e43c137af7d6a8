"""Adj-RIB-In with import policy, Loc-RIB with the decision process, diffs for the FIB."""
