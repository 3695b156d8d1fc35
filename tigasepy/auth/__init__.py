"""Authentication: SASL mechanisms, authenticators, the authentication service, account management.

- ``scram``: SCRAM key derivation, client side and server exchange (RFC 5802, 7677).
- ``plain``: PLAIN (RFC 4616) checked against the stored SCRAM keys or by a password check.
- ``internal``: ``InternalAuthenticator`` over an ``IAccountStore``.
- ``ldap``: ``LdapAuthenticator``, PLAIN checked by binding to an LDAP directory (ldap3).
- ``anonymous``: SASL ANONYMOUS (XEP-0175) and the temporary accounts it makes.
- ``chain``: ``AuthenticatorChain``, one virtual host's ordered authenticators as one.
- ``service``: ``AuthenticationService``, per-domain authenticators plus TLS policy.
- ``factory``: builds the per-host chains and the service from ``[auth]``.
- ``accounts``: ``AccountManager``, register / change password / remove accounts.
"""
