"""Transitional facade over `core.usecases` with the old method names, while the adapters move to scoped use
cases (`UseCases(deps, scope)`). Every call here runs in the system scope; it goes away once nothing uses it."""
from __future__ import annotations

from typing import Any, Callable, Iterable

from .backbones import BackboneProvider, registry_entry
from .model import DEFAULT_WORKSPACE, Domain
from .ports import BlobStore, JobRunner, UnitOfWorkFactory
from .usecases import Deps, Scope, UseCases, embed_blobs, export_file, recover, workspace_for_key
from .usecases.base import InlineRunner
from .usecases.images import ImageResult, ImageUpload
from .usecases.projects import ProjectSummary

__all__ = ["CvService", "ImageResult", "ImageUpload", "InlineRunner", "ProjectSummary"]


class CvService:
    def __init__(self, uow_factory: UnitOfWorkFactory, blobs: BlobStore, backbones: BackboneProvider,
                 runner: JobRunner | None = None, embed_batch_size: int = 16):
        self.deps = Deps(uow_factory, blobs, backbones, runner or InlineRunner(), embed_batch_size)
        self.uow, self.blobs, self.backbones, self.runner = uow_factory, blobs, backbones, self.deps.runner
        self.progress = self.deps.progress
        self._system = UseCases(self.deps, Scope.system())

    @classmethod
    def over(cls, deps: Deps) -> CvService:
        service = cls.__new__(cls)
        service.deps = deps
        service.uow, service.blobs, service.backbones, service.runner = deps.uow, deps.blobs, deps.backbones, deps.runner
        service.progress = deps.progress
        service._system = UseCases(deps, Scope.system())
        return service

    @property
    def images_embedded(self) -> int:
        return self.deps.stats.images

    def scoped(self, scope: Scope) -> UseCases:
        return UseCases(self.deps, scope)

    def _in(self, workspace: str | None) -> UseCases:
        return self._system if workspace is None else self.scoped(Scope.of(workspace))

    def _pid(self, iteration_id: str) -> str:
        with self.uow() as uow:
            it = uow.iterations.get(iteration_id)
        from . import errors
        if it is None:
            raise errors.NotFound(f"no iteration {iteration_id} in this project")
        return it.project_id

    # projects
    def create_project(self, name: str, domain: Any = Domain.Compact, classification_type: Any = "Multiclass",
                       description: str = "", workspace: str = DEFAULT_WORKSPACE, created_by: str | None = None,
                       threshold: float = 0.5):
        return self._in(workspace).projects.create(name, domain, classification_type, description, created_by,
                                                   threshold)

    def list_projects(self, workspace: str | None = None):
        return self._in(workspace).projects.list()

    def get_project(self, project_id: str):
        return self._system.projects.get(project_id)

    def find_project(self, name_or_id: str, workspace: str | None = DEFAULT_WORKSPACE):
        return self._in(workspace).projects.find(name_or_id)

    def project_summary(self, project_id: str):
        return self._system.projects.summary(project_id)

    def update_project(self, project_id: str, **kw: Any):
        return self._system.projects.update(project_id, **kw)

    def delete_project(self, project_id: str) -> None:
        self._system.projects.delete(project_id)

    # tags
    def create_tag(self, project_id: str, name: str, type: Any = "Regular", description: str = ""):
        return self._system.tags.create(project_id, name, type, description)

    def list_tags(self, project_id: str):
        return self._system.tags.list(project_id)

    def get_tag(self, project_id: str, tag_id: str):
        return self._system.tags.get(project_id, tag_id)

    def update_tag(self, project_id: str, tag_id: str, **kw: Any):
        return self._system.tags.update(project_id, tag_id, **kw)

    def delete_tag(self, project_id: str, tag_id: str) -> None:
        self._system.tags.delete(project_id, tag_id)

    def get_or_create_tags(self, project_id: str, names: Iterable[str]):
        return self._system.tags.get_or_create(project_id, names)

    # images
    def add_images(self, project_id: str, uploads: list[ImageUpload], source: str = "", uploaded_by: str | None = None,
                   max_bytes: int | None = None):
        kw = {} if max_bytes is None else {"max_bytes": max_bytes}
        return self._system.images.add(project_id, uploads, source, uploaded_by, **kw)

    def list_images(self, project_id: str, tagged: bool | None = None, tag_ids: list[str] | None = None,
                    skip: int = 0, take: int | None = None):
        return self._system.images.list(project_id, tagged, tag_ids, skip, take)

    def count_images(self, project_id: str, tagged: bool | None = None, tag_ids: list[str] | None = None) -> int:
        return self._system.images.count(project_id, tagged, tag_ids)

    def get_images(self, project_id: str, image_ids: list[str]):
        return self._system.images.get_many(project_id, image_ids)

    def image_bytes(self, project_id: str, image_id: str) -> bytes:
        return self._system.images.data(project_id, image_id)

    def set_image_tags(self, project_id: str, image_ids: list[str], tag_ids: list[str]):
        return self._system.images.set_tags(project_id, image_ids, tag_ids)

    def add_image_tags(self, project_id: str, image_ids: list[str], tag_ids: list[str]):
        return self._system.images.add_tags(project_id, image_ids, tag_ids)

    def remove_image_tags(self, project_id: str, image_ids: list[str], tag_ids: list[str] | None = None):
        return self._system.images.remove_tags(project_id, image_ids, tag_ids)

    def delete_images(self, project_id: str, image_ids: list[str] | None = None, all_images: bool = False) -> int:
        return self._system.images.delete(project_id, image_ids, all_images)

    # training and iterations
    def train(self, project_id: str, force: bool = False):
        return self._system.training.train(project_id, force)

    def wait_for_training(self, iteration_id: str, timeout: float | None = None):
        return self._system.training.wait(self._pid(iteration_id), iteration_id, timeout)

    def embeddings(self, backbone: Any, sha256s: list[str], progress: Callable[[int, int], None] | None = None):
        return embed_blobs(self.deps, backbone, sha256s, progress)

    def list_iterations(self, project_id: str):
        return self._system.iterations.list(project_id)

    def get_iteration(self, iteration_id: str, project_id: str | None = None):
        return self._system.iterations.get(project_id or self._pid(iteration_id), iteration_id)

    def iteration_by_number(self, project_id: str, number: int):
        return self._system.iterations.by_number(project_id, number)

    def set_iteration_notify(self, iteration_id: str, adapter: str, target: dict | None):
        return self._system.notifications.set_target(self._pid(iteration_id), iteration_id, adapter, target)

    def unreported_iterations(self, adapter: str, include_running: bool = False):
        return self._system.notifications.unreported(adapter, include_running)

    def mark_reported(self, iteration_id: str) -> None:
        try:
            pid = self._pid(iteration_id)
        except Exception:  # noqa: BLE001 - deleted meanwhile
            return
        self._system.notifications.mark_reported(pid, iteration_id)

    def rename_iteration(self, project_id: str, iteration_id: str, name: str):
        return self._system.iterations.rename(project_id, iteration_id, name)

    def set_default_iteration(self, project_id: str, iteration_id: str):
        return self._system.iterations.set_default(project_id, iteration_id)

    def publish_iteration(self, project_id: str, iteration_id: str, publish_name: str, overwrite: bool = True):
        return self._system.iterations.publish(project_id, iteration_id, publish_name, overwrite)

    def unpublish_iteration(self, project_id: str, iteration_id: str):
        return self._system.iterations.unpublish(project_id, iteration_id)

    def delete_iteration(self, project_id: str, iteration_id: str, release_default: bool = False) -> None:
        self._system.iterations.delete(project_id, iteration_id, release_default)

    def iteration_performance(self, iteration_id: str, threshold: float | None = None, project_id: str | None = None):
        return self._system.iterations.performance(project_id or self._pid(iteration_id), iteration_id, threshold)

    def image_performances(self, iteration_id: str, project_id: str | None = None):
        rows = self._system.iterations.image_performances(project_id or self._pid(iteration_id), iteration_id)
        return [(img.id, preds) for img, preds in rows]

    # prediction
    def predict(self, project_id: str, data: bytes, iteration_id: str | None = None, publish_name: str | None = None,
                store: bool = True, source: str = "", max_bytes: int | None = None, workspace: str | None = None):
        kw = {} if max_bytes is None else {"max_bytes": max_bytes}
        return self._in(workspace).predictions.predict(project_id, data, iteration_id, publish_name, store, **kw)

    def get_prediction(self, project_id: str, prediction_id: str):
        return self._system.predictions.get(project_id, prediction_id)

    def list_predictions(self, project_id: str, iteration_id: str | None = None, skip: int = 0, take: int | None = None):
        return self._system.predictions.list(project_id, iteration_id, skip, take)

    def delete_predictions(self, project_id: str, prediction_ids: list[str]) -> int:
        return self._system.predictions.delete(project_id, prediction_ids)

    def add_prediction_to_training(self, project_id: str, prediction_id: str, tag_ids: list[str],
                                   uploaded_by: str | None = None):
        return self._system.predictions.add_to_training(project_id, prediction_id, tag_ids, uploaded_by)

    # channels and keys
    def bind_channel(self, workspace: str, channel_id: str, project_id: str, bound_by: str | None = None):
        return self._in(workspace).channels.bind(channel_id, project_id, bound_by)

    def channel_binding(self, workspace: str, channel_id: str):
        return self._in(workspace).channels.binding(channel_id)

    def channel_bindings(self, project_id: str):
        return self._system.channels.for_project(project_id)

    def set_collect_mode(self, workspace: str, channel_id: str, tag_names: list[str] | None):
        return self._in(workspace).channels.set_collect_mode(channel_id, tag_names)

    def link_message_images(self, workspace: str, channel_id: str, message_ts: str, image_ids: list[str]) -> None:
        self._in(workspace).channels.link_message_images(channel_id, message_ts, image_ids)

    def message_image_ids(self, workspace: str, channel_id: str, message_ts: str) -> list[str]:
        return self._in(workspace).channels.message_image_ids(channel_id, message_ts)

    def workspace_keys(self, workspace: str, regenerate: bool = False):
        return self._in(workspace).channels.keys(regenerate)

    def workspace_for_key(self, key: str):
        found = workspace_for_key(self.deps, key)
        return None if found is None else (found[0], found[1].value)

    # maintenance and export
    def recover(self) -> dict:
        return recover(self.deps)

    @staticmethod
    def domains() -> list[dict]:
        return [{"name": d.value, "exportable": registry_entry(d).exportable,
                 "description": registry_entry(d).description} for d in Domain]

    def release_default_iteration(self, project_id: str, iteration_id: str):
        raise NotImplementedError("use delete_iteration(..., release_default=True)")

    def export_iteration(self, project_id: str, iteration_id: str, platform: str = "ONNX", flavor: str | None = None):
        return self._system.exports.start(project_id, iteration_id, platform, flavor)

    def list_exports(self, project_id: str, iteration_id: str):
        return self._system.exports.list(project_id, iteration_id)

    def export_file(self, iteration_id: str, export_id: str) -> bytes:
        return export_file(self.deps, iteration_id, export_id)
