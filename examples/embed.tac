# An example of embedding tigasepy in your own Twisted application:
#     twistd -n -y examples/embed.tac
# builds the same service tree that `twistd -n tigasepy` builds, from a config
# made in code, next to your own services. Environment variables (for the tests):
# TIGASEPY_EXAMPLE_PORT (default 5222), TIGASEPY_EXAMPLE_DATA (default ./data-embed).
import os

from twisted.application import service
from twisted.internet import reactor

from tigasepy.config import config_from_dict
from tigasepy.service import build_service

config = config_from_dict({
    "server": {"domains": ["localhost"], "data_dir": os.path.abspath(os.environ.get("TIGASEPY_EXAMPLE_DATA", "data-embed"))},
    "c2s": {"interface": "127.0.0.1", "port": int(os.environ.get("TIGASEPY_EXAMPLE_PORT", "5222")),
            "direct_tls_port": 0},
    # Federation: no s2s listener here (outgoing streams still work); give ports to accept peers.
    "s2s": {"port": 0, "direct_tls_port": 0},
    "extensions": {"welcome": {"class": "examples.custom_extension:Welcome", "text": "Hello from an embedded server"}},
    "components": {"echo": {"class": "examples.echo_component:EchoComponent", "domain": "echo.localhost"}},
})

application = service.Application("my-app-with-xmpp")
build_service(config, reactor).setServiceParent(application)
# ... your own services here: service.Service().setServiceParent(application)
