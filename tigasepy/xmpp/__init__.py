"""Pure XMPP data helpers: namespaces, addresses, errors. Imports nothing else of tigasepy."""
