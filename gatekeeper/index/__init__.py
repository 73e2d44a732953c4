"""The consent index on Redis: keyed-hash keys, compact records, atomic generations, one round trip."""
