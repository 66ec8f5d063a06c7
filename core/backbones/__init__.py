"""Backbone registry: one entry per domain; adding a backbone is registering one entry."""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import BackboneUnavailable
from ..model import Domain
from .base import Backbone, BackboneSettings, Preprocessing
from .clip import DEFAULT_MODEL, DEFAULT_PRETRAINED, ClipBackbone
from .efficientnet import EfficientNetLite0


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    factory: Callable[[BackboneSettings], Backbone]
    exportable: bool = False
    prompt_templates: tuple[str, ...] = field(default=("a photo of a {}.",))
    description: str = ""


_REGISTRY: dict[str, RegistryEntry] = {}


def register_backbone(domain: str, entry: RegistryEntry) -> None:
    _REGISTRY[domain] = entry


def registry_entry(domain: Domain | str) -> RegistryEntry:
    key = domain.value if isinstance(domain, Domain) else str(domain)
    try:
        return _REGISTRY[key]
    except KeyError:
        raise BackboneUnavailable(f"no backbone registered for domain {key}") from None


def exportable(domain: Domain | str) -> bool:
    """Whether a domain's iterations can be exported (the backbone's capability, decided here only)."""
    return registry_entry(domain).exportable


def domain_catalogue() -> list[dict[str, object]]:
    """Every domain with its capabilities, as adapters list them."""
    return [{"name": d.value, "exportable": registry_entry(d).exportable,
             "description": registry_entry(d).description} for d in Domain]


def registered_domains() -> list[str]:
    return list(_REGISTRY)


PROMPTS = {
    "General": ("a photo of a {}.", "a photo of the {}.", "a close-up photo of a {}."),
    "Food": ("a photo of {}, a type of food.", "a photo of a plate of {}."),
    "Landmarks": ("a photo of the {}, a landmark.", "a photo of {}, a famous place."),
    "Retail": ("a photo of a {}, a product for sale.", "a product photo of {}."),
    "Adult": ("a photo that is {}.", "an image containing {}."),
}


def _clip_factory(domain: str, templates: tuple[str, ...]) -> Callable[[BackboneSettings], Backbone]:
    def build(settings: BackboneSettings) -> Backbone:
        cfg = settings.clip.get(domain, {})
        return ClipBackbone(
            domain,
            model=cfg.get("model") or DEFAULT_MODEL,
            pretrained=cfg.get("pretrained") or DEFAULT_PRETRAINED,
            checkpoint=cfg.get("checkpoint") or None,
            settings=settings,
            prompt_templates=templates,
        )

    return build


for _domain, _templates in PROMPTS.items():
    register_backbone(_domain, RegistryEntry(
        name=f"clip:{_domain}", factory=_clip_factory(_domain, _templates), prompt_templates=_templates,
        exportable=True,  # the image tower, its normalisation and the probe in one graph
        description=f"CLIP image encoder (open_clip) with {_domain} prompts, exportable",
    ))
register_backbone("Compact", RegistryEntry(
    name="efficientnet-lite0", factory=lambda s: EfficientNetLite0(s), exportable=True,
    description="EfficientNet-Lite0 (ImageNet), exportable, works offline",
))


class BackboneProvider:
    """Builds each domain's backbone once and shares it (models are large; loading is slow)."""

    def __init__(self, settings: BackboneSettings | None = None):
        self.settings = settings or BackboneSettings()
        self._cache: dict[str, Backbone] = {}
        self._lock = threading.Lock()

    def for_domain(self, domain: Domain | str) -> Backbone:
        key = domain.value if isinstance(domain, Domain) else str(domain)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = registry_entry(key).factory(self.settings)
            return self._cache[key]

    def loaded(self) -> dict[str, Backbone]:
        return dict(self._cache)


__all__ = [
    "Backbone", "BackboneSettings", "Preprocessing", "ClipBackbone", "EfficientNetLite0", "BackboneProvider",
    "RegistryEntry", "register_backbone", "registry_entry", "registered_domains", "PROMPTS",
]
