"""The phonefleet server: aiohttp + python-socketio on PostgreSQL."""
