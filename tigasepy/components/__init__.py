"""Components: services addressed by their own domain (XEP-0114 style), in-process or external."""

from __future__ import annotations

from typing import Any, Mapping

from tigasepy.config import ConfigError, section_from_dict


def configured_components(tables: Mapping[str, Mapping[str, Any]]) -> list[tuple[type, str, Any]]:
    """The components named in ``[components.NAME]`` tables: (class, domain, parsed config).

    Each table needs ``class = "package.module:Class"`` and ``domain``; the remaining
    options are parsed by the class's ``config_type`` (a dataclass) when it has one.
    """
    from tigasepy.extensions import load_class

    out = []
    for name, table in tables.items():
        path = ("components", name)
        raw = dict(table)
        class_path = raw.pop("class", None)
        domain = raw.pop("domain", None)
        if not isinstance(class_path, str) or not class_path:
            raise ConfigError("needs class = 'module:Class'", path + ("class",))
        if not isinstance(domain, str) or not domain or "@" in domain or "/" in domain:
            raise ConfigError("needs a domain", path + ("domain",))
        try:
            cls = load_class(class_path)
        except (ImportError, AttributeError, ValueError) as e:
            raise ConfigError(f"cannot load {class_path!r}: {e}", path + ("class",)) from None
        config_type = getattr(cls, "config_type", None)
        if config_type is None:
            if raw:
                raise ConfigError(f"unknown option {sorted(raw)[0]!r}", path + (sorted(raw)[0],))
            config = None
        else:
            config = section_from_dict(config_type, raw, path)
        out.append((cls, domain.lower(), config))
    return out
