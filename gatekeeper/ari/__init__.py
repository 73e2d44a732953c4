"""Asterisk REST Interface (ARI) adapter: the event model, REST request helpers and the Stasis application."""
