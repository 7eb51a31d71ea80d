"""Names, versions and aliases: which loaded model a request goes to. Pure functions over the
name index and the aliases every worker shares.

A request names a model's version, or one of its aliases: `latest` (the highest loaded version),
or one an operator set, which may split traffic between versions and mirror a share to another.
A request that names no version gets the alias `default` when there is one, else `latest`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Iterable

from ..catalog import ModelInfo
from ..errors import BadRequest, ModelNotLoaded

LATEST, DEFAULT = "latest", "default"
ALIAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")

Names = dict[str, dict[str, str]]  # model name -> {version: model id}
Aliases = dict[str, dict[str, dict]]  # model name -> {alias: spec}


@dataclass(frozen=True)
class Target:
    """The loaded model a request resolved to, and the one it is mirrored to (if any)."""

    model_id: str
    version: str
    shadow: str | None = None


def name_index(infos: Iterable[ModelInfo]) -> Names:
    """Loaded models by name and version; of two with the same name and version, the newer."""
    names: Names = {}
    for info in sorted(infos, key=lambda i: (i.time_created or "", i.id)):
        names.setdefault(info.name, {})[info.version] = info.id
    return names


def route(versions: dict[str, str], aliases: dict[str, dict], name: str, version: str | None) -> Target:
    """The version of model `name` (loaded as `versions`) a request for `version` (a version, an
    alias, or None) goes to, drawn by the alias's weights, with its shadow drawn by its percent."""
    wanted = version or (DEFAULT if DEFAULT in aliases else LATEST)
    if wanted in versions:
        return Target(versions[wanted], wanted)
    if wanted == LATEST:
        latest = max(versions, key=version_order)
        return Target(versions[latest], latest)
    spec = aliases.get(wanted)
    if spec is None:
        raise ModelNotLoaded(f"model {name!r} has no loaded version or alias {wanted!r} (versions: "
                             f"{', '.join(sorted(versions, key=version_order))}; aliases: "
                             f"{', '.join(sorted(aliases)) or 'none'})", model_name=name, version=wanted)
    chosen = random.choices(list(spec["versions"]), weights=list(spec["versions"].values()))[0]
    if chosen not in versions:
        raise ModelNotLoaded(f"alias {wanted!r} of model {name!r} sends this request to version {chosen!r}, "
                             "which is not loaded", model_name=name, version=chosen)
    shadow = spec.get("shadow")
    mirror = versions.get(shadow["version"]) if shadow and random.random() * 100 < shadow["percent"] else None
    return Target(versions[chosen], chosen, mirror)


def aliases_using(model_id: str, names: Names, aliases: Aliases) -> list[str]:
    """"name/alias" of the aliases that route to (or mirror) the version this model is."""
    named = [(name, version) for name, versions in names.items()
             for version, known in versions.items() if known == model_id]
    return [f"{name}/{alias}" for name, version in named for alias, spec in sorted(aliases.get(name, {}).items())
            if version in spec["versions"] or (spec.get("shadow") or {}).get("version") == version]


def checked_alias(alias: str, spec: Any) -> dict:
    """An alias as stored, {"versions": {version: weight}, "shadow": {"version", "percent"} or None},
    once its name and its shape are checked (the request alone decides both)."""
    if not ALIAS_NAME.match(alias) or alias == LATEST:
        raise BadRequest(f"an alias is a letter then up to 63 letters, digits, '.', '_' or '-', and not "
                         f"{LATEST!r} (it always means the highest loaded version): {alias[:80]!r}")
    return _alias_spec(spec)


def check_alias_targets(name: str, alias: str, spec: dict, loaded: dict[str, str]) -> None:
    """BadRequest unless every version the alias names is loaded now (as `loaded`) and none is the alias."""
    if alias in loaded:
        raise BadRequest(f"{alias!r} is a version of model {name!r}: a request naming it gets that version, so "
                         "an alias of that name could never be reached")
    named = [*spec["versions"], *([spec["shadow"]["version"]] if spec["shadow"] else [])]
    missing = [v for v in named if v not in loaded]
    if missing:
        raise BadRequest(f"model {name!r} has no loaded version {', '.join(map(repr, missing))} (loaded: "
                         f"{', '.join(sorted(loaded, key=version_order)) or 'none'})", missing=missing)


def _alias_spec(spec: Any) -> dict:
    usage = ('send {"versions": {"<version>": <weight>, ...}, "shadow": {"version": "<version>", "percent": '
             '<0-100>}}; weights are whole numbers, at least one above 0; shadow is optional')
    if not isinstance(spec, dict) or set(spec) - {"versions", "shadow"} or not isinstance(spec.get("versions"), dict):
        raise BadRequest(usage)
    versions = spec["versions"]
    if (not versions or len(versions) > 16
            or not all(isinstance(w, int) and not isinstance(w, bool) and 0 <= w <= 1_000_000 for w in versions.values())
            or not any(versions.values())):
        raise BadRequest(usage)
    shadow = spec.get("shadow")
    if shadow is not None:
        if not isinstance(shadow, dict) or set(shadow) != {"version", "percent"}:
            raise BadRequest(usage)
        version, percent = shadow["version"], shadow["percent"]
        if (not isinstance(version, str) or isinstance(percent, bool) or not isinstance(percent, (int, float))
                or not 0 < percent <= 100):
            raise BadRequest(usage)
        shadow = {"version": version, "percent": percent}
    return {"versions": dict(versions), "shadow": shadow}


def version_order(version: str) -> list:
    """"1.10" after "1.9" and "10" after "9": numeric parts compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"[.\-_+]", version)]
