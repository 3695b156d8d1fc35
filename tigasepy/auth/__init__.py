"""Authentication: SASL mechanisms, authenticators, the authentication service, account management.

- ``scram``: SCRAM key derivation, client side and server exchange (RFC 5802, 7677).
- ``plain``: PLAIN (RFC 4616) checked against the stored SCRAM keys.
- ``internal``: ``InternalAuthenticator`` over an ``IAccountStore``.
- ``service``: ``AuthenticationService``, per-domain authenticators plus TLS policy.
- ``accounts``: ``AccountManager``, register / change password / remove accounts.
"""
