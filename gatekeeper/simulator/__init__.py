"""A simulated Asterisk: a FastAGI client that behaves byte for byte like Asterisk 23 in the recorded traces.

Used by the tests, the demo (`make run`) and `gatekeeper call` (a smoke test of a running gatekeeper
without a PBX). It is a test instrument, not a PBX: it runs the AGI commands a gatekeeper sends and
reports what the dialplan would see.
"""
