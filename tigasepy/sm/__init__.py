"""The session manager: bound sessions, the extension pipeline and delivery to local users."""
