"""The pure decision core: numbers, policy, calendars. No I/O lives here (a test enforces it)."""
