"""RFC 4271 §8 session state machine: bytes, events and an explicit `now` in; bytes, events, deadline out."""
