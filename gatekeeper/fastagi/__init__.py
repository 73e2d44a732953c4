"""FastAGI adapter: Asterisk talks to gatekeeper over the FastAGI line protocol."""
